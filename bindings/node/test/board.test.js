// Boards: the seeded simulator with fault injection and virtual time,
// GPIO/PWM/fan, diagnostics, and the errors of each.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Board, Sample } = require('..')

const fanRpm = (board) => board.sample().toJSON().fans[0].rpm.value

test('a sim sample is deterministic per seed', () => {
  const [a, b, c] = [Board.sim('pi4b', { seed: 7 }), Board.sim('pi4b', { seed: 7 }), Board.sim('pi4b', { seed: 8 })]
  for (const board of [a, b, c]) {
    board.setLoad(80)
    board.step(120)
  }
  const [sa, sb, sc] = [a.sample(), b.sample(), c.sample()]
  assert.deepEqual(sa.toJSON(), sb.toJSON())
  assert.notDeepEqual(sa.toJSON(), sc.toJSON())
  assert.equal(typeof sa.cpuTempC, 'number')
  assert.equal(sa.toJSON().temperatures[0].id, 'cpu')
  assert.equal(sa.atMs, a.nowMs())
  // A sample round-trips through its object form.
  assert.deepEqual(Sample.from(sa.toJSON()).toJSON(), sa.toJSON())
  assert.equal(JSON.parse(JSON.stringify(sa)).temperatures[0].id, 'cpu')
  assert.equal(a.backend, 'sim')
  assert.equal(a.model, 'pi4b')
  assert.equal(a.profile().model, 'pi4b')
})

test('virtual time and load heat the board', () => {
  const board = Board.open({ backend: 'sim', noise: false, cooling: 'heatsink' })
  const t0 = board.nowMs()
  const cold = board.sample().cpuTempC
  board.setLoad(100)
  board.step(600)
  assert.equal(board.nowMs() - t0, 600_000)
  assert.ok(board.sample().cpuTempC > cold + 10)
  board.setAmbient(40)
})

test('fault injection and clearing', () => {
  const board = Board.sim('pi4b', { noise: false })
  board.setFan('fan0', 100)
  board.step(30)
  assert.ok(fanRpm(board) > 0)
  board.inject('fan_stall')
  board.step(30)
  assert.equal(fanRpm(board), 0)
  board.clearFaults()
  board.step(30)
  assert.ok(fanRpm(board) > 0)
  // A stuck sensor reads the same value whatever happens.
  const before = board.sample().cpuTempC
  board.inject({ kind: 'sensor_stuck', sensor: 'cpu' })
  board.setLoad(100)
  board.step(300)
  assert.equal(board.sample().cpuTempC, before)
  assert.throws(() => board.inject('no_such_fault'), (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'invalid_argument')
    assert.equal(e.category, 'invalid_input')
    assert.equal(e.name, 'InvalidInput')
    assert.match(e.message, /no_such_fault/)
    return true
  })
  // Faults from the options; a missing sensor reads null.
  assert.equal(Board.sim('pi4b', { faults: [{ kind: 'sensor_missing', sensor: 'cpu' }] }).sample().cpuTempC, null)
  board.setSecurity('case_switch', true)
})

test('fan, GPIO and PWM', () => {
  const board = Board.sim()
  assert.deepEqual(board.fans(), ['fan0'])
  board.setFan('fan0', 55)
  assert.equal(board.fanDuty('fan0'), 55)
  board.gpioWrite(17, true)
  assert.equal(board.gpioRead(17), true)
  board.gpioWrite(17, false)
  assert.equal(board.gpioRead(17), false)
  board.pwm(12, 25, 1000)
  board.pwm(12, 50)
})

test('hardware errors are typed', () => {
  const board = Board.sim()
  assert.throws(() => board.setFan('fan9', 10), (e) => e.code === 'not_found' && e.category === 'not_found' && e.name === 'NotFound')
  assert.throws(() => board.setFan('fan0', 150), { code: 'invalid_argument', category: 'invalid_input' })
  assert.throws(() => board.gpioWrite(99, true), (e) => typeof e.code === 'string' && e.category !== undefined)
  assert.throws(() => Board.open({ backend: 'nope' }), { code: 'invalid_argument' })
  assert.throws(() => board.step(-1), { code: 'invalid_argument' })
})

test('diagnostics report on the board', () => {
  const report = Board.sim().diagnostics()
  assert.equal(typeof report, 'object')
  assert.ok(JSON.stringify(report).length > 2)
})
