// Arguments of the wrong JS type: napi-rs refuses them before any Wrale code
// runs, and src/extend.js turns that refusal into an `InvalidInput` (a
// `WraleError`) with code 'invalid_argument' naming the call; a method that
// returns a Promise rejects it instead of throwing. Correct calls, the
// classes' identity and the errors of the Rust side are unaffected.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const wrale = require('..')
const { Board, Device, Fleet, SafetyEngine, Sample, SyncSession, Twin, WraleError, InvalidInput, PolicyViolation, NotFound } = wrale
const { startFleetd, tempDir } = require('./fleetd')
const { INTERLOCK } = require('./fixtures')

let fleetd

test.before(async () => {
  fleetd = await startFleetd()
})

test.after(async () => {
  if (fleetd) await fleetd.stop()
})

/** An assertion on an argument error: class, code, category, and a message with every `parts`. */
function argumentError(...parts) {
  return (e) => {
    assert.ok(e instanceof InvalidInput, `${e?.constructor?.name}: ${e?.message}`)
    assert.ok(e instanceof WraleError && e instanceof Error)
    assert.equal(e.name, 'InvalidInput')
    assert.equal(e.code, 'invalid_argument')
    assert.equal(e.category, 'invalid_input')
    for (const part of parts) assert.ok(e.message.includes(part), `${JSON.stringify(part)} not in ${JSON.stringify(e.message)}`)
    assert.ok(e.cause instanceof Error, 'napi-rs error kept as the cause')
    // Past the frames of the addon's JS layer (src/extend.js, `(<anonymous>:line:column)`).
    const top = e.stack.split('\n').find((line) => line.trimStart().startsWith('at ') && !line.includes('(<anonymous>:'))
    assert.match(top, /arguments\.test\.js/, `the stack starts at the call: ${e.stack}`)
    return true
  }
}

test('synchronous calls: a wrong type throws an InvalidInput naming the call and the problem', () => {
  assert.throws(() => new SafetyEngine(42), argumentError('new SafetyEngine: invalid argument: ', 'expected a string, got number 42'))
  assert.throws(() => new SafetyEngine(), argumentError('new SafetyEngine: ', 'expected a string, got undefined'))
  const engine = new SafetyEngine('pi4b')
  assert.throws(() => engine.loadFile(5), argumentError('SafetyEngine#loadFile: ', 'expected a string, got number 5'))
  assert.throws(() => engine.evaluate({ cpuTempC: 50 }), argumentError('SafetyEngine#evaluate: ', 'expected a Sample'))
  assert.throws(() => engine.check(Symbol('cmd')), argumentError('SafetyEngine#check: ', 'symbols cannot be passed where a JSON value is expected'))
  assert.throws(() => engine.check({ type: 'reboot' }, { actor: 7 }), argumentError('SafetyEngine#check: ', 'CheckOptions.actor: expected a string, got number 7'))
  assert.throws(() => SafetyEngine.fromFile('pi4b', null), argumentError('SafetyEngine.fromFile: ', 'expected a string, got null'))
  // A field of an options object of the wrong type is named.
  assert.throws(() => Board.sim('pi4b', { seed: 'seven' }), argumentError('Board.sim: ', 'SimOptions.seed: expected a number, got string'))
  const board = Board.sim('pi4b')
  assert.throws(() => board.gpioWrite(17, 'high'), argumentError('Board#gpioWrite: ', 'expected a boolean'))
  assert.throws(() => board.step('10'), argumentError('Board#step: ', 'expected a number, got string'))
  const twin = new Twin({ id: 'pi-1', model: 'pi4b', labels: {} }, 'device:pi-1', 0)
  assert.throws(() => twin.rollback('abc', 'user:ada', 1), argumentError('Twin#rollback: ', 'expected an array'))
  assert.throws(() => new SyncSession({}, 'peer'), argumentError('new SyncSession: ', 'expected a Twin'))
  // A setter.
  const fleet = new Fleet('http://127.0.0.1:9')
  assert.throws(() => {
    fleet.token = 5
  }, argumentError('Fleet#token (setter): ', 'expected a string, got number 5'))
  assert.equal(fleet.token, null)
})

test('Promise-returning calls: a wrong type rejects (never throws) with an InvalidInput', async () => {
  const fleet = new Fleet(fleetd.url, fleetd.token)
  let pending
  assert.doesNotThrow(() => (pending = fleet.device(1)))
  assert.ok(pending instanceof Promise)
  await assert.rejects(pending, argumentError('Fleet#device: ', 'expected a string, got number 1'))
  await assert.rejects(fleet.sendCommand('pi-1', { type: 'reboot' }, 3), argumentError('Fleet#sendCommand: ', 'got number 3'))
  await assert.rejects(fleet.events({ kinds: [5] }), argumentError('Fleet#events: ', 'EventQuery.kinds: expected a string, got number 5'))
  await assert.rejects(fleet.ackAlert('first'), argumentError('Fleet#ackAlert: ', 'expected a number, got string'))
  // An options object without a required field.
  const dir = tempDir('wrale-node-args-')
  await assert.rejects(
    Device.enroll(Board.sim('pi4b'), dir, { fleetUrl: fleetd.url, enrollmentToken: 'x' }),
    argumentError('Device.enroll: ', 'missing field deviceId'),
  )
  assert.throws(() => Device.start(Board.sim('pi4b'), dir, {}), argumentError('Device.start: ', 'missing field deviceId'))
  fs.rmSync(dir, { recursive: true, force: true })
  const stream = await fleet.events({ kinds: ['audit'] })
  await assert.rejects(stream.next('soon'), argumentError('EventStream#next: ', 'expected a number, got string'))
  await stream.close()
})

test('correct calls, class identity and the Rust-side errors are unaffected', async () => {
  const engine = new SafetyEngine('pi4b', 'scope = "fleet"\n[thermal]\nwarn_c = 65.0\n')
  assert.ok(engine instanceof SafetyEngine)
  assert.equal(engine.constructor, SafetyEngine)
  assert.equal(engine.thresholds().warnC, 65)
  const board = Board.sim('pi4b', { seed: 7 })
  const sample = board.sample()
  assert.ok(sample instanceof Sample, 'an instance the addon made is an instance of the exported class')
  assert.ok(board instanceof Board)
  assert.ok(Array.isArray(engine.evaluate(sample).actions))
  assert.ok(Sample.from(sample.toJSON()) instanceof Sample)
  // A subclass of a native class works.
  class Strict extends SafetyEngine {
    refuses(command) {
      return this.check(command).verdict === 'refused'
    }
  }
  const strict = new Strict('pi4b')
  assert.ok(strict instanceof Strict && strict instanceof SafetyEngine)
  strict.load(INTERLOCK)
  assert.equal(strict.refuses({ type: 'set_gpio', pin: 17, level: 'high' }), true)
  assert.equal(strict.refuses({ type: 'set_gpio', pin: 27, level: 'high' }), false)
  // The errors of the Rust side keep their class and code.
  // (A fresh engine: the sample evaluated above told the other one the case is closed.)
  assert.throws(() => new SafetyEngine('pi4b', INTERLOCK).require({ type: 'set_gpio', pin: 17, level: 'high' }), (e) => e instanceof PolicyViolation && e.code === 'policy_violation')
  assert.throws(() => engine.check({ type: 'warp_drive' }), (e) => e instanceof InvalidInput && e.code === 'invalid_argument' && e.cause === undefined)
  assert.throws(() => board.setFan('fan9', 10), (e) => e instanceof NotFound)
  const fleet = new Fleet(fleetd.url, fleetd.token)
  assert.ok(fleet instanceof Fleet)
  assert.ok(Array.isArray(await fleet.devices()))
  await assert.rejects(fleet.device('no-such-device'), (e) => e instanceof NotFound && e.details.status === 404)
  // Any other synchronous failure of a Promise-returning method rejects too.
  await assert.rejects(fleet.config('group'), { code: 'invalid_argument' })
})

/** The classes index.d.ts declares in its generated part, with their members' parameter counts and return types. */
function declaredMembers() {
  const dir = path.join(__dirname, '..')
  const dts = fs.readFileSync(path.join(dir, 'index.d.ts'), 'utf8')
  const header = fs.readFileSync(path.join(dir, 'src', 'header.d.ts'), 'utf8')
  const jsLayer = new Set([...header.matchAll(/^export declare class (\w+)/gm)].map((m) => m[1]))
  const members = []
  for (const [, cls, body] of dts.matchAll(/^export declare class (\w+) \{\n([\s\S]*?)^\}/gm)) {
    if (jsLayer.has(cls)) continue
    for (const line of body.split('\n')) {
      const m = /^ {2}(static |set |get )?(\w+)\((.*)\)(?:: (.+))?$/.exec(line)
      if (!m || m[1] === 'get ') continue
      members.push({ cls, kind: (m[1] ?? '').trim() || (m[2] === 'constructor' ? 'constructor' : 'method'), name: m[2], arity: arity(m[3]), promise: /^Promise</.test(m[4] ?? '') })
    }
  }
  return members
}

/** The number of parameters of a declared parameter list. */
function arity(params) {
  if (params.trim() === '') return 0
  let depth = 0
  let count = 1
  for (const c of params.replaceAll('=>', '')) {
    if ('<({['.includes(c)) depth++
    else if ('>)}]'.includes(c)) depth--
    else if (c === ',' && depth === 0) count++
  }
  return count
}

// An argument no declared parameter type accepts: an object (so not a string,
// number, boolean, array, Buffer or native instance) whose every field, own
// key included, is a symbol (so not an options object nor a JSON value).
const poisoned = () =>
  new Proxy(
    {},
    {
      get: () => Symbol('bad'),
      has: () => true,
      ownKeys: () => ['bad'],
      getOwnPropertyDescriptor: () => ({ value: Symbol('bad'), enumerable: true, configurable: true, writable: true }),
    },
  )

test('every declared native member with a parameter refuses a wrong argument as an InvalidInput; Promise-returning ones reject', async () => {
  const members = declaredMembers()
  assert.ok(members.length > 60, `parsed ${members.length} members of index.d.ts`)
  const fleet = new Fleet(fleetd.url, fleetd.token)
  const twin = new Twin({ id: 'pi-1', model: 'pi4b', labels: {} }, 'device:pi-1', 0)
  // An instance for each class with methods that take parameters; a class
  // missing here fails the test.
  const receivers = {
    Board: () => Board.sim('pi4b'),
    SafetyEngine: () => new SafetyEngine('pi4b'),
    Sample: () => Board.sim('pi4b').sample(),
    Twin: () => twin,
    SyncSession: () => new SyncSession(twin, 'peer'),
    Fleet: () => fleet,
    EventStream: async () => {
      const stream = await fleet.events()
      streams.push(stream)
      return stream
    },
  }
  const streams = []
  let checked = 0
  for (const { cls, kind, name, arity, promise } of members) {
    if (arity === 0) continue
    const what = `${cls} ${kind} ${name}`
    const bad = Array.from({ length: arity }, poisoned)
    let call
    if (kind === 'constructor') call = () => new wrale[cls](...bad)
    else if (kind === 'static') call = () => wrale[cls][name](...bad)
    else {
      assert.ok(receivers[cls], `no receiver for ${cls} in this test`)
      const self = await receivers[cls]()
      call = kind === 'set' ? () => (self[name] = bad[0]) : () => self[name](...bad)
    }
    if (promise) {
      let result
      assert.doesNotThrow(() => (result = call()), what)
      assert.ok(result instanceof Promise, what)
      await assert.rejects(result, argumentError(), what)
    } else {
      assert.throws(call, argumentError(), what)
    }
    checked++
  }
  for (const stream of streams) await stream.close()
  assert.ok(checked > 50, `${checked} members checked`)
})

test('src/extend.js treats exactly the declared Promise-returning methods as such, ones without parameters included', async () => {
  // Called on an object that is not an instance of its class, every native
  // method fails before doing anything (V8's receiver check): one declared
  // to return a Promise must reject, any other must throw. So a method whose
  // declared return type changes fails here until src/extend.js's list of
  // Promise-returning methods follows, whatever its parameters.
  const methods = declaredMembers().filter((m) => m.kind === 'method')
  assert.ok(methods.some((m) => m.promise && m.arity === 0 && m.cls !== 'Fleet'), 'a Promise-returning method without parameters outside Fleet is checked')
  for (const { cls, name, promise } of methods) {
    const what = `${cls}#${name} on a wrong receiver`
    const call = () => wrale[cls].prototype[name].call({})
    if (promise) {
      let result
      assert.doesNotThrow(() => (result = call()), what)
      assert.ok(result instanceof Promise, what)
      await assert.rejects(result, Error, what)
    } else {
      assert.throws(call, Error, what)
    }
  }
})
