// The event stream as an async iterator and as callbacks (Fleet#onEvent), and
// errors as instances of the WraleError classes, against a real fleetd.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const wrale = require('..')
const { Fleet, SafetyEngine, WraleError, PolicyViolation, NotFound, AuthError, InvalidInput, ConflictError, Unavailable } = wrale
const { startFleetd, eventually, sleep } = require('./fleetd')

let fleetd

test.before(async () => {
  fleetd = await startFleetd()
})

test.after(async () => {
  if (fleetd) await fleetd.stop()
})

const mentions = (e, text) => JSON.stringify(e).includes(text)

/** Local ports of the established TCP connections to fleetd's port (/proc/net/tcp). */
function connectionsToFleetd() {
  const port = new URL(fleetd.url).port
  const hex = Number(port).toString(16).toUpperCase().padStart(4, '0')
  return new Set(fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[2].endsWith(`:${hex}`) && f[3] === '01')
    .map((f) => f[1]))
}

/** The one connection to fleetd opened since `before` (the event stream's WebSocket). */
function newConnection(before) {
  const opened = [...connectionsToFleetd()].filter((c) => !before.has(c))
  return opened.length === 1 && opened[0]
}

test('for await over the event stream sees a real change; break closes the stream', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(fleetd.url, fleetd.token)
  const stream = await fleet.events({ kinds: ['audit'] })
  assert.equal(typeof stream[Symbol.asyncIterator], 'function')
  const change = fleet.createGroup({ id: 'ev-iter', name: 'iterated' })
  let found
  let count = 0
  for await (const event of stream) {
    count++
    if (mentions(event, 'ev-iter')) {
      found = event
      break
    }
  }
  await change
  assert.equal(found.kind, 'audit')
  assert.ok(count >= 1)
  assert.equal(stream.ended, true, 'break closed the stream')
  assert.equal(await stream.next(), null)
  // A closed stream iterates to nothing.
  for await (const _ of stream) assert.fail('no event after close')
  // The Promise of a stream iterates it too; break closes its WebSocket.
  await fleet.groups() // the HTTP connection is open and pooled before looking
  const before = connectionsToFleetd()
  const change2 = (async () => {
    const ws = await eventually(() => newConnection(before), 'the WebSocket connection')
    await fleet.createGroup({ id: 'ev-iter-2', name: 'iterated' })
    return ws
  })()
  for await (const event of fleet.events({ kinds: ['audit'] })) {
    if (mentions(event, 'ev-iter-2')) break
  }
  const ws = await change2
  await eventually(() => !connectionsToFleetd().has(ws), 'the WebSocket closed by break')
})

test('onEvent: callbacks for real changes, none after stop, and the WebSocket is closed', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(fleetd.url, fleetd.token)
  await fleet.groups() // the HTTP connection is open and pooled before looking
  const before = connectionsToFleetd()
  const seen = []
  const sub = await fleet.onEvent({ kinds: ['audit'] }, (e) => seen.push(e))
  assert.ok(sub instanceof wrale.EventSubscription)
  assert.equal(sub.active, true)
  const ws = await eventually(() => newConnection(before), 'the WebSocket connection')
  await fleet.createGroup({ id: 'ev-cb-1', name: 'one' })
  await eventually(() => seen.some((e) => mentions(e, 'ev-cb-1')), 'callback for ev-cb-1')
  assert.ok(connectionsToFleetd().has(ws))
  await sub.stop()
  assert.equal(sub.active, false)
  await sub.done
  await eventually(() => !connectionsToFleetd().has(ws), 'the WebSocket closed')
  // Another change, seen by a second stream but not by the stopped callback.
  const n = seen.length
  const witness = await fleet.events({ kinds: ['audit'] })
  await fleet.createGroup({ id: 'ev-cb-2', name: 'two' })
  for (;;) {
    const e = await witness.next(20_000)
    assert.notEqual(e, null, 'the witness stream saw ev-cb-2')
    if (mentions(e, 'ev-cb-2')) break
  }
  await witness.close()
  await sleep(200)
  assert.equal(seen.length, n, 'no callback after stop')
  await sub.stop() // idempotent
})

test('onEvent: a throwing callback ends the subscription and goes to onError', { timeout: 60_000 }, async () => {
  const fleet = new Fleet(fleetd.url, fleetd.token)
  const errors = []
  const sub = await fleet.onEvent({ kinds: ['audit'] }, () => {
    throw new Error('boom')
  }, (e) => errors.push(e))
  await fleet.createGroup({ id: 'ev-throw', name: 'throw' })
  await eventually(() => errors.length === 1, 'onError called')
  assert.equal(errors[0].message, 'boom')
  await sub.done
  assert.equal(sub.active, false)
  // Without onError, `done` rejects with the error.
  const bare = await fleet.onEvent({ kinds: ['audit'] }, () => {
    throw new Error('bare boom')
  })
  await fleet.createGroup({ id: 'ev-throw-2', name: 'throw' })
  await assert.rejects(bare.done, /bare boom/)
  await assert.rejects(fleet.onEvent({ kinds: ['audit'] }), (e) => e instanceof InvalidInput)
})

test('errors are WraleError subclasses, thrown and rejected', async () => {
  const check = (cls, category, code) => (e) => {
    assert.ok(e instanceof cls, `${e.name} is not a ${cls.name}`)
    assert.ok(e instanceof WraleError && e instanceof Error)
    assert.equal(e.name, cls.name)
    assert.equal(e.category, category)
    if (code) assert.equal(e.code, code)
    assert.ok(e.message.length > 0)
    assert.match(e.stack, new RegExp(`^${cls.name}: `))
    return true
  }
  // A real refusal by the safety engine, thrown synchronously.
  const engine = new SafetyEngine('pi4b')
  assert.throws(() => engine.require({ type: 'set_fan_duty', fan: 'fan0', duty_pct: 0 }), (e) => {
    check(PolicyViolation, 'policy', 'policy_violation')(e)
    assert.ok(!(e instanceof NotFound))
    assert.match(e.message, /^policy violation: rule /)
    return true
  })
  // Bad input, thrown and rejected.
  assert.throws(() => new Fleet('not a url'), check(InvalidInput, 'invalid_input', 'invalid_argument'))
  assert.throws(() => engine.check({ type: 'warp_drive' }), check(InvalidInput, 'invalid_input', 'invalid_argument'))
  const fleet = new Fleet(fleetd.url, fleetd.token)
  await assert.rejects(fleet.events({ kinds: ['nope'] }), check(InvalidInput, 'invalid_input', 'invalid_argument'))
  // fleetd's 404, 401 and 409, and an unreachable peer, as rejected Promises.
  await assert.rejects(fleet.device('no-such-device'), (e) => {
    check(NotFound, 'not_found', 'not_found')(e)
    assert.equal(e.details.status, 404)
    return true
  })
  await assert.rejects(new Fleet(fleetd.url, 'wrt_bogus').devices(), (e) => {
    check(AuthError, 'auth')(e)
    assert.equal(e.details.status, 401)
    return true
  })
  await fleet.createGroup({ id: 'err-dup', name: 'dup' })
  await assert.rejects(fleet.createGroup({ id: 'err-dup', name: 'dup' }), (e) => {
    check(ConflictError, 'conflict')(e)
    assert.equal(e.details.status, 409)
    return true
  })
  await assert.rejects(new Fleet('http://127.0.0.1:9').devices(), check(Unavailable, 'unavailable', 'transport'))
  // The classes can be used like any Error class.
  const own = new PolicyViolation('nope', 'policy_violation', 'policy')
  assert.ok(own instanceof WraleError)
  assert.equal(own.code, 'policy_violation')
})
