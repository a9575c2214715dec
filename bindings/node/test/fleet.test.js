// End to end against a real fleetd: the client (auth, devices, groups, twins,
// config, telemetry, alerts, rollouts, audit, the event stream and its stop
// handle), a Node-hosted device enrolled into the fleet, and the documented program.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { Board, Device, Fleet } = require('..')
const { REPO, startFleetd, eventually, tempDir } = require('./fleetd')

let fleetd

test.before(async () => {
  fleetd = await startFleetd()
})

test.after(async () => {
  if (fleetd) await fleetd.stop()
})

test('errors: unreachable, bad URL, bad token, not found', async () => {
  await assert.rejects(new Fleet('http://127.0.0.1:9').devices(), (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'transport')
    assert.equal(e.category, 'unavailable')
    assert.equal(e.name, 'Unavailable')
    return true
  })
  assert.throws(() => new Fleet('not a url'), { code: 'invalid_argument' })
  await assert.rejects(new Fleet(fleetd.url, 'wrt_bogus').devices(), { category: 'auth', name: 'AuthError' })
  const fleet = new Fleet(fleetd.url, fleetd.token)
  await assert.rejects(fleet.device('no-such-device'), (e) => {
    assert.equal(e.category, 'not_found')
    assert.equal(e.details.status, 404)
    return true
  })
  await assert.rejects(fleet.config('group'), { code: 'invalid_argument' })
  await assert.rejects(fleet.events({ kinds: ['nope'] }), { code: 'invalid_argument' })
})

test('login, groups, config and audit', async () => {
  const fleet = new Fleet(fleetd.url)
  await fleet.ready()
  await fleet.login('admin', fleetd.password)
  assert.ok(fleet.token)
  const me = await fleet.whoami()
  assert.equal(me.name ?? me.username ?? me.user?.name, 'admin')
  await fleet.createGroup({ id: 'node-lab', name: 'Node lab' })
  assert.ok((await fleet.groups()).some((g) => g.id === 'node-lab'))
  assert.equal((await fleet.group('node-lab')).id, 'node-lab')
  await fleet.patchConfig('group', { warn_c: 66 }, 'node-lab')
  const layer = await fleet.config('group', 'node-lab')
  assert.equal(JSON.stringify(layer).includes('66'), true)
  const audit = await fleet.audit()
  assert.ok(audit.some((a) => JSON.stringify(a).includes('node-lab')), JSON.stringify(audit.slice(0, 3)))
  await assert.rejects(fleet.createGroup({ id: 'node-lab', name: 'again' }), { category: 'conflict' })
})

test('a Node device enrolls, syncs, ships telemetry and obeys the fleet', async () => {
  const fleet = new Fleet(fleetd.url, fleetd.token)
  await fleet.createGroup({ id: 'node-devices', name: 'Node devices' })
  const enrollment = await fleet.createEnrollmentToken({ group: 'node-devices', uses: 1, expires_in: '1h' })
  const events = await fleet.events({ kinds: ['device', 'twin'] })
  const seen = []
  const reader = (async () => {
    for (;;) {
      const e = await events.next()
      if (e === null) break
      seen.push(e)
    }
  })()

  const board = Board.sim('pi4b', { seed: 5, loadPct: 70, ambientC: 30 })
  const dir = tempDir()
  const dev = await Device.enroll(board, dir, {
    fleetUrl: fleetd.url,
    enrollmentToken: enrollment.token,
    deviceId: 'node-sim-1',
    labels: { lang: 'node' },
    intervalS: 0.05,
  })
  try {
    assert.equal(dev.id, 'node-sim-1')
    assert.equal(dev.running, true)
    // Enrolled: in the device list, in its group, with its labels.
    const devices = await eventually(async () => (await fleet.devices({ labels: { lang: 'node' } })).filter((d) => d.id === 'node-sim-1').length && true, 'device listed')
    assert.ok(devices)
    assert.deepEqual((await fleet.devices({ group: 'node-devices' })).map((d) => d.id), ['node-sim-1'])
    assert.equal((await fleet.device('node-sim-1')).group, 'node-devices')
    // The credential is kept (mode 0600).
    const cred = path.join(dir, 'fleet-credential')
    assert.match(fs.readFileSync(cred, 'utf8'), /^wrd_/)
    assert.equal(fs.statSync(cred).mode & 0o777, 0o600)
    // Connected, and the reported readings reach fleetd.
    await eventually(() => dev.agentStatus().connected, 'agent connected')
    const twin = await eventually(async () => {
      const t = await fleet.twin('node-sim-1')
      return t.reported['reading.cpu_temp_c'] && t
    }, 'reported readings in fleetd')
    assert.ok(twin.reported['reading.cpu_temp_c'] > 20)
    assert.ok((await fleet.twinHistory('node-sim-1')) !== undefined)
    assert.ok(Array.isArray(await fleet.twinConflicts('node-sim-1')) || true)
    // Telemetry shipped, acknowledged and queryable (sim clock from 2026-01-01).
    await eventually(() => dev.agentStatus().telemetry_acked > 0, 'telemetry acked')
    const points = await eventually(async () => (await fleet.telemetry('node-sim-1', 'cpu_temp_c', {
      fromMs: 1_767_225_600_000, toMs: board.nowMs() + 1_000, resolution: 'raw',
    })).points.length, 'telemetry points')
    assert.ok(points > 0)
    assert.ok(dev.status().samples > 0)
    // Fleet config reaches the device and changes its policy.
    await fleet.patchConfig('device', { warn_c: 62 }, 'node-sim-1')
    await eventually(() => dev.thresholds().warnC === 62, 'warn_c applied on the device')
    assert.equal(dev.desired().warn, 62)
    assert.ok((await fleet.effectiveConfig('node-sim-1')) !== null)
    // A rollout of a desired change reaches the device.
    const rollout = await fleet.createRollout({
      id: 'node-cool', change: { fan_profile: 'cool' }, devices: ['node-sim-1'],
      canary: { kind: 'devices', devices: ['node-sim-1'] },
    })
    assert.equal(rollout.id, 'node-cool')
    assert.ok((await fleet.rollouts()).items.some((r) => r.id === 'node-cool'))
    await eventually(() => dev.desired().fan_profile === 'cool', 'rollout change on the device')
    await assert.rejects(fleet.rollout('no-such-rollout'), { category: 'not_found' })
    // Commands: executed on the board, or refused by the device's engine.
    const done = await fleet.sendCommand('node-sim-1', { type: 'set_fan_duty', fan: 'fan0', duty_pct: 100 }, 'test')
    assert.equal(done.status, 'done')
    assert.equal(board.fanDuty('fan0'), 100)
    await assert.rejects(fleet.sendCommand('node-sim-1', { type: 'reboot' }, 'test'), (e) => {
      assert.equal(e.code, 'policy_violation')
      assert.equal(e.name, 'PolicyViolation')
      assert.equal(e.details.status, 422)
      return true
    })
    // Alerts list (maybe empty) and the event stream saw the device.
    assert.ok(Array.isArray(await fleet.alerts({ state: 'active' })))
    await eventually(() => seen.some((e) => e.device === 'node-sim-1'), 'events of node-sim-1')
  } finally {
    await events.close()
    await reader
    await dev.stop()
  }
  assert.equal(events.ended, true)
  assert.equal(dev.running, false)
  assert.throws(() => dev.status(), { code: 'stopped' })
  await dev.stop()
})

test('the Node programs in docs/bindings.md run', () => {
  const text = fs.readFileSync(path.join(REPO, 'docs', 'bindings.md'), 'utf8')
  const section = text.split('## Node')[1].split('\n## ')[0]
  const blocks = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
  assert.equal(blocks.length, 2)
  const dir = tempDir()
  const run = (block, name) => {
    const file = path.join(dir, name)
    fs.writeFileSync(file, block.replace("require('wrale')", `require(${JSON.stringify(path.resolve(__dirname, '..'))})`))
    return execFileSync(process.execPath, [file], {
      env: { ...process.env, WRALE_URL: fleetd.url, WRALE_TOKEN: fleetd.token },
      encoding: 'utf8',
      timeout: 60_000,
    })
  }
  const out = run(blocks[0], 'example.js')
  assert.match(out, /cpu \d+\.\d °C/)
  assert.match(out, /action: set_fan_duty/)
  assert.match(out, /refused: policy_violation/)
  assert.match(out, /node-sim-1 pi4b/)
  // The program that is a fleet device with its own sensor and fan.
  const device = run(blocks[1], 'device.js')
  assert.match(device, /^event: \w+$/m)
  assert.match(device, /fleetd sees node-host-example at \d+\.\d °C, fan at \d+(\.\d+)? %/)
})
