// The safety engine: policies from TOML text, evaluation of samples, command
// checks, and typed refusals.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Board, SafetyEngine } = require('..')
const { INTERLOCK } = require('./fixtures')

function hotSample() {
  const board = Board.sim('pi4b', { noise: false, loadPct: 100, ambientC: 35 })
  board.step(900)
  return board.sample()
}

test('a hot sample drives the fan and raises alerts', () => {
  const engine = new SafetyEngine('pi4b')
  const decision = engine.evaluate(hotSample())
  const fan = decision.actions.filter((a) => a.action === 'set_fan_duty')
  assert.ok(fan.length > 0)
  assert.equal(fan[0].fan, 'fan0')
  assert.ok(fan[0].duty_pct > 0)
  // Above the warning and throttle thresholds past their hold: alerts and throttling.
  const sample = hotSample()
  const later = engine.evaluate(sample, sample.atMs + 10_000)
  const codes = new Set(later.alerts.map((a) => a.alert.code))
  assert.ok(codes.has('thermal_warning') && codes.has('thermal_throttle'), [...codes].join())
  assert.ok(later.actions.some((a) => a.action === 'throttle_workloads'))
  assert.deepEqual(later.transitions, [{ from: 'normal', to: 'throttle' }])
  assert.equal(engine.state().throttled, true)
})

test('an untrusted sensor is fail-safe', () => {
  const board = Board.sim('pi4b', { faults: [{ kind: 'sensor_fault', sensor: 'cpu' }] })
  const engine = new SafetyEngine('pi4b')
  const decision = engine.evaluate(board.sample())
  assert.equal(engine.state().fail_safe, true)
  assert.equal(decision.alerts[0].change, 'raised')
})

test('command checks and refusals', () => {
  const engine = new SafetyEngine('pi4b', INTERLOCK)
  const cmd = { type: 'set_gpio', pin: 17, level: 'high' }
  // Case state unknown: the interlock fails closed.
  const verdict = engine.check(cmd, { actor: 'user:ada', reason: 'test' })
  assert.equal(verdict.verdict, 'refused')
  assert.equal(verdict.rule, 'interlock:gpio17-case-open')
  assert.ok(verdict.reason)
  assert.deepEqual(engine.check({ type: 'set_gpio', pin: 27, level: 'high' }), { verdict: 'allowed' })
  assert.throws(() => engine.require(cmd), (e) => {
    assert.equal(e.code, 'policy_violation')
    assert.equal(e.category, 'policy')
    assert.equal(e.name, 'PolicyViolation')
    assert.ok(e.message.startsWith('policy violation: rule interlock:gpio17-case-open: '), e.message)
    return true
  })
  assert.equal(engine.admit({ type: 'set_fan_duty', fan: 'fan0', duty_pct: 100 }).verdict, 'allowed')
  assert.throws(() => engine.check({ type: 'warp_drive' }), { code: 'invalid_argument', name: 'InvalidInput' })
  assert.throws(() => engine.check(cmd, { actor: 'robot:r2' }), { code: 'invalid_actor', name: 'InvalidInput' })
})

test('loosening or broken policies are refused and the old one stays', () => {
  const engine = new SafetyEngine('pi4b')
  engine.load('scope = "fleet"\n[thermal]\nwarn_c = 65.0\n')
  assert.equal(engine.thresholds().warnC, 65)
  assert.throws(() => engine.load('scope = "fleet"\n[thermal]\ncritical_c = 95.0\n'), { code: 'policy_violation' })
  assert.throws(() => engine.load('scope = "fleet"\n[thermal]\nwarn_c = "hot"\n', 'fleet.toml'), (e) => {
    assert.equal(e.code, 'invalid_policy')
    assert.equal(e.category, 'invalid_input')
    assert.ok(e.message.startsWith('fleet.toml'), e.message)
    return true
  })
  assert.equal(engine.thresholds().warnC, 65)
  engine.reset()
  assert.deepEqual(engine.state().alerts, [])
  assert.throws(() => new SafetyEngine('pi9z'), { code: 'invalid_argument', category: 'invalid_input' })
})

test('a policy from a file; a bad file is refused naming the file and line', () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const { WraleError, InvalidInput, NotFound } = require('..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wrale-node-policy-'))
  const good = path.join(dir, 'fleet.toml')
  fs.writeFileSync(good, 'scope = "fleet"\n[thermal]\nwarn_c = 64.0\n')
  const engine = SafetyEngine.fromFile('pi4b', good)
  assert.equal(engine.thresholds().warnC, 64)
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, 'scope = "fleet"\n\n[thermal]\nwarn_c = = 60\n')
  for (const call of [() => SafetyEngine.fromFile('pi4b', bad), () => engine.loadFile(bad)]) {
    assert.throws(call, (e) => {
      assert.ok(e instanceof InvalidInput && e instanceof WraleError)
      assert.equal(e.code, 'invalid_policy')
      assert.ok(e.message.startsWith(`${bad}:4 `), e.message) // file:line
      return true
    })
  }
  assert.equal(engine.thresholds().warnC, 64, 'the previous policy stays in force')
  assert.throws(() => SafetyEngine.fromFile('pi4b', path.join(dir, 'missing.toml')), (e) => {
    assert.ok(e instanceof NotFound)
    assert.ok(e.message.includes('missing.toml'), e.message)
    return true
  })
  fs.rmSync(dir, { recursive: true, force: true })
})
