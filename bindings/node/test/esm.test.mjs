// The ES module entry (index.mjs, package.json `exports` → `import`): every
// public name as a named import, the native classes and the ones src/extend.js
// adds, the same objects as the CommonJS entry's, and `instanceof` across
// real failures (the safety engine, a real fleetd).
import test from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import * as namespace from 'wrale'
import wrale, {
  Board,
  Fleet,
  SafetyEngine,
  WraleError,
  PolicyViolation,
  NotFound,
  InvalidInput,
  Unavailable,
  EventSubscription,
  version,
} from 'wrale'
import fleetdHelpers from './fleetd.js'
import { INTERLOCK } from './fixtures.js'

const require = createRequire(import.meta.url)
const { startFleetd } = fleetdHelpers

test('every name index.d.ts declares is a named export of the ES module, the same object as require(\'wrale\')\'s', () => {
  const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8')
  const declared = [...dts.matchAll(/^export declare (?:class|function|const|enum) (\w+)/gm)].map((m) => m[1]).sort()
  assert.ok(declared.includes('WraleError') && declared.includes('Fleet'), declared.join())
  const named = Object.keys(namespace).filter((n) => n !== 'default').sort()
  assert.deepEqual(named, declared, 'index.mjs exports exactly the declared names')
  const cjs = require('wrale')
  assert.equal(wrale, cjs, 'the default export is the CommonJS module')
  assert.deepEqual(Object.keys(cjs).sort(), declared)
  for (const name of declared) assert.equal(namespace[name], cjs[name], name)
  assert.equal(typeof version(), 'string')
  assert.equal(Object.getPrototypeOf(NotFound), WraleError)
  assert.equal(typeof EventSubscription, 'function')
})

test('named imports: a PolicyViolation of the safety engine and an argument error are instances of the imported classes', () => {
  // Refused while the case state is unknown.
  const engine = new SafetyEngine('pi4b', INTERLOCK)
  assert.ok(engine instanceof SafetyEngine)
  assert.throws(() => engine.require({ type: 'set_gpio', pin: 17, level: 'high' }), (e) => {
    assert.ok(e instanceof PolicyViolation)
    assert.ok(e instanceof WraleError)
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'policy_violation')
    return true
  })
  const sample = Board.sim('pi4b', { seed: 7 }).sample()
  assert.ok(Array.isArray(engine.evaluate(sample).actions))
  assert.throws(() => engine.loadFile(42), (e) => {
    assert.ok(e instanceof InvalidInput && e instanceof WraleError)
    assert.equal(e.code, 'invalid_argument')
    return true
  })
})

test('named imports: a NotFound from a real fleetd', { timeout: 60_000 }, async () => {
  const fleetd = await startFleetd()
  try {
    const fleet = new Fleet(fleetd.url, fleetd.token)
    assert.ok(fleet instanceof Fleet)
    await assert.rejects(fleet.device('no-such-device'), (e) => {
      assert.ok(e instanceof NotFound)
      assert.ok(e instanceof WraleError)
      assert.ok(!(e instanceof PolicyViolation))
      assert.equal(e.category, 'not_found')
      assert.equal(e.details.status, 404)
      return true
    })
    await assert.rejects(new Fleet('http://127.0.0.1:9').devices(), (e) => e instanceof Unavailable)
  } finally {
    await fleetd.stop()
  }
})
