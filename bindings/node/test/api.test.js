// index.d.ts declares exactly what the addon exports at run time (the generated
// part and the hand-written header for src/extend.js); scripts/test-node also
// type-checks test/types/check.ts against it.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const wrale = require('..')

test('every runtime export is declared in index.d.ts, and every declared value exists', () => {
  const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8')
  const declared = new Set(
    [...dts.matchAll(/^export declare (?:class|function|const|enum) (\w+)/gm)].map((m) => m[1]),
  )
  const exported = new Set(Object.keys(wrale))
  assert.deepEqual([...exported].filter((n) => !declared.has(n)).sort(), [])
  assert.deepEqual([...declared].filter((n) => !exported.has(n)).sort(), [])
  for (const cls of ['PolicyViolation', 'HardwareError', 'SyncError', 'AuthError', 'NotFound', 'InvalidInput', 'ConflictError', 'Unavailable', 'InternalError']) {
    assert.equal(Object.getPrototypeOf(wrale[cls]), wrale.WraleError, cls)
    assert.equal(wrale[cls].prototype.name, cls)
  }
  assert.equal(typeof wrale.EventStream.prototype[Symbol.asyncIterator], 'function')
  assert.equal(typeof wrale.Fleet.prototype.onEvent, 'function')
})
