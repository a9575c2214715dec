// Twins: create, load/save, desired/reported, merge, sync messages, history,
// conflicts, rollback, and their errors.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Twin, SyncSession } = require('..')

const create = (id, nowMs = 0, labels = {}) => new Twin({ id, model: 'pi4b', labels }, `device:${id}`, nowMs)

test('create, edit, report, save and load', () => {
  const twin = create('pi-1', 1_000, { role: 'cam' })
  assert.equal(twin.device, 'pi-1')
  assert.deepEqual(twin.meta().labels, { role: 'cam' })
  assert.equal(twin.editDesired({ warn: 70, fan_profile: 'cool' }, 'user:ada', 2_000), true)
  assert.equal(twin.editDesired({ warn: 70 }, 'user:ada', 2_500), false)
  assert.equal(twin.report({ cpu_temp_c: 51 }, 3_000), true)
  assert.equal(twin.desired().warn, 70)
  assert.equal(twin.desired().fan_profile, 'cool')
  assert.equal(twin.reported().readings.cpu_temp_c, 51)
  assert.equal(twin.fields('desired').warn_c, 70)
  const bytes = twin.save()
  assert.ok(Buffer.isBuffer(bytes))
  const copy = Twin.load(bytes, 'user:bob')
  assert.deepEqual(copy.heads(), twin.heads())
  assert.deepEqual(copy.desired(), twin.desired())
  const history = twin.history()
  assert.deepEqual(history.slice(-2).map((h) => h.author.kind), ['user', 'device'])
  assert.equal(history.at(-2).at_ms, 2_000)
  assert.equal(typeof twin.epoch, 'number')
})

test('rollback and raw fields', () => {
  const twin = create('pi-2')
  twin.editDesired({ warn: 70 }, 'user:ada', 1)
  const version = twin.heads()
  twin.setField('desired.warn_c', 60, 'user:ada', 2)
  assert.equal(twin.desired().warn, 60)
  assert.equal(twin.rollback(version, 'user:ada', 3), true)
  assert.equal(twin.desired().warn, 70)
  assert.throws(() => twin.setField('desired.colour', 'red', 'user:ada', 4), { code: 'unknown_field', name: 'InvalidInput' })
  assert.throws(() => twin.editDesired({ warn: 'hot' }, 'user:ada', 5), { category: 'invalid_input' })
  assert.throws(() => twin.editDesired({ warn_c: 63 }, 'user:ada', 5), { category: 'invalid_input', message: /warn_c/ })
  assert.throws(() => twin.editDesired({ warn: 1 }, 'nobody', 5), { code: 'invalid_author' })
  assert.equal(twin.setField('desired.warn_c', null, 'user:ada', 6), true)
})

test('merge of concurrent edits, conflicts and resolution', () => {
  const a = create('pi-3')
  const b = Twin.load(a.save(), 'user:bob')
  a.editDesired({ fan_profile: 'quiet' }, 'user:ada', 10)
  b.editDesired({ warn: 66 }, 'user:bob', 11)
  a.merge(b)
  b.merge(a)
  assert.deepEqual(a.heads(), b.heads())
  assert.equal(a.desired().fan_profile, 'quiet')
  assert.equal(a.desired().warn, 66)
  // Concurrent writes of one field: resolved the same way on both, shown as a conflict.
  a.editDesired({ warn: 61 }, 'user:ada', 20)
  b.editDesired({ warn: 64 }, 'user:bob', 21)
  a.merge(b)
  b.merge(a)
  assert.equal(a.desired().warn, b.desired().warn)
  const conflicts = a.conflicts()
  assert.deepEqual(conflicts.map((c) => c.field), ['desired.warn_c'])
  assert.deepEqual(new Set(conflicts[0].values.map((v) => v.value)), new Set([61, 64]))
  const hash = a.resolve('desired.warn_c', 63, 'user:ada', 30)
  assert.match(hash, /^[0-9a-f]{64}$/)
  assert.equal(a.desired().warn, 63)
  assert.deepEqual(a.conflicts(), [])
  // Twins of different devices do not merge.
  assert.throws(() => a.merge(create('pi-4')), { code: 'wrong_device', name: 'ConflictError' })
})

test('sync sessions converge', () => {
  const device = create('pi-5')
  const fleet = Twin.load(device.save(), 'fleet:fleetd')
  device.report({ cpu_temp_c: 47 }, 5)
  fleet.editDesired({ warn: 64 }, 'fleet:fleetd', 6)
  const d = new SyncSession(device, 'fleet')
  const f = new SyncSession(fleet, 'device')
  for (let i = 0; i < 10; i++) {
    let quiet = true
    for (const [src, srcTwin, dst, dstTwin] of [[d, device, f, fleet], [f, fleet, d, device]]) {
      const frame = src.generate(srcTwin)
      if (frame !== null && frame !== undefined) {
        quiet = false
        dst.receive(dstTwin, frame, 7)
      }
    }
    if (quiet) break
  }
  assert.deepEqual(device.heads(), fleet.heads())
  assert.equal(device.desired().warn, 64)
  assert.equal(fleet.reported().readings.cpu_temp_c, 47)
  assert.throws(() => d.receive(device, Buffer.from('\x00garbage'), 8), (e) => e.category === 'sync' && e.name === 'SyncError')
})

test('loading garbage is a sync error', () => {
  assert.throws(() => Twin.load(Buffer.from('not a twin'), 'user:ada'), { category: 'sync' })
})
