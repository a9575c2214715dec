// A board whose sensors and fans are JS functions (Board.fromCallbacks): read
// on the JS thread by board.sample(), and on the runtime's thread by a running
// Device that reports them to a real fleetd.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Board, Device, Fleet, SafetyEngine, HardwareError, InvalidInput, PolicyViolation, WraleError } = require('..')
const { startFleetd, eventually, tempDir, sleep } = require('./fleetd')

const temp = (sample, id) => sample.toJSON().temperatures.find((t) => t.id === id).temp_c

test('JS sensors reach board.sample(); a throwing or non-numeric one is a sensor fault', () => {
  let cpu = 48.5
  const board = Board.fromCallbacks('pi4b', {
    cpu: () => cpu,
    ambient: () => {
      throw new Error('probe unplugged')
    },
    gpu: () => 'hot',
  })
  assert.equal(board.backend, 'host')
  assert.equal(board.model, 'pi4b')
  let s = board.sample()
  assert.equal(s.cpuTempC, 48.5)
  assert.deepEqual(temp(s, 'cpu'), { status: 'ok', value: 48.5 })
  assert.deepEqual(temp(s, 'ambient'), { status: 'fault', value: 'sensor_fault' })
  assert.deepEqual(temp(s, 'gpu'), { status: 'fault', value: 'sensor_fault' })
  cpu = 52.25
  assert.equal(board.sample().cpuTempC, 52.25)
  // A faulty CPU sensor: no reading, and the engine goes fail-safe.
  cpu = Number.NaN
  s = board.sample()
  assert.equal(s.cpuTempC, null)
  const engine = new SafetyEngine('pi4b')
  engine.evaluate(s)
  assert.equal(engine.state().fail_safe, true)
})

test('JS fans take the duty; a throwing fan is a HardwareError', () => {
  const duties = []
  const board = Board.fromCallbacks('pi4b', { cpu: () => 40 }, {
    fan0: (d) => duties.push(d),
    fan1: () => {
      throw new Error('fan gone')
    },
  })
  assert.deepEqual(board.fans(), ['fan0', 'fan1'])
  board.setFan('fan0', 40)
  assert.deepEqual(duties, [40])
  assert.equal(board.fanDuty('fan0'), 40)
  assert.throws(() => board.setFan('fan1', 40), (e) => {
    assert.ok(e instanceof HardwareError && e instanceof WraleError)
    assert.equal(e.category, 'hardware')
    assert.match(e.message, /fan gone/)
    return true
  })
  assert.equal(board.fanDuty('fan1'), 0)
  assert.throws(() => Board.fromCallbacks('pi9z', { cpu: () => 40 }), { name: 'InvalidInput' })
  assert.throws(() => Board.fromCallbacks('pi4b', { cpu: 40 }), (e) => {
    assert.ok(e instanceof InvalidInput)
    assert.equal(e.message, 'temperatures.cpu: expected a function, got Number')
    return true
  })
  assert.throws(() => Board.fromCallbacks('pi4b', { cpu: () => 40 }, { fan0: 'x' }), /fans\.fan0: expected a function/)
})

test('a Node device with JS sensors and fans reports to fleetd and obeys it', { timeout: 120_000 }, async () => {
  const fleetd = await startFleetd()
  let dev
  try {
    const fleet = new Fleet(fleetd.url, fleetd.token)
    const enrollment = await fleet.createEnrollmentToken({ uses: 1, expires_in: '1h' })
    let cpu = 51.25
    let broken = false
    const duties = []
    const board = Board.fromCallbacks('pi4b', {
      cpu: () => {
        if (broken) throw new Error('probe unplugged')
        return cpu
      },
    }, { fan0: (d) => duties.push(d) }, { timeoutMs: 200 })
    dev = await Device.enroll(board, tempDir(), {
      fleetUrl: fleetd.url,
      enrollmentToken: enrollment.token,
      deviceId: 'node-host-1',
      intervalS: 0.1,
    })
    // The runtime reads the JS sensor on its own thread; the reading reaches fleetd.
    await eventually(async () => (await fleet.twin('node-host-1')).reported['reading.cpu_temp_c'] === 51.25, 'reported 51.25')
    // Later readings (the twin's reported readings are rate-limited) in the telemetry.
    const telemetryHas = (v) => eventually(async () => {
      const t = await fleet.telemetry('node-host-1', 'cpu_temp_c', {
        fromMs: Date.now() - 120_000, toMs: Date.now() + 1_000, resolution: 'raw',
      })
      return JSON.stringify(t.points).includes(String(v)) && t
    }, `telemetry with ${v}`)
    cpu = 57.75
    const series = await telemetryHas(57.75)
    assert.ok(series.points.length > 1, JSON.stringify(series.points.slice(0, 2)))
    // A fleet command drives the JS fan from the runtime's thread.
    const done = await fleet.sendCommand('node-host-1', { type: 'set_fan_duty', fan: 'fan0', duty_pct: 100 }, 'test')
    assert.equal(done.status, 'done')
    assert.equal(duties.at(-1), 100)
    assert.equal(board.fanDuty('fan0'), 100)
    // A refusal by the device's engine rejects with a PolicyViolation.
    await assert.rejects(fleet.sendCommand('node-host-1', { type: 'reboot' }, 'test'), (e) => {
      assert.ok(e instanceof PolicyViolation && e instanceof WraleError && e instanceof Error)
      assert.equal(e.code, 'policy_violation')
      assert.equal(e.details.status, 422)
      return true
    })
    // The JS thread blocked far beyond the timeout: the runtime's reads time
    // out as sensor faults (no deadlock), and it recovers once JS runs again.
    const before = dev.status().samples
    const until = Date.now() + 1_000
    while (Date.now() < until) {} // eslint-disable-line no-empty
    const blocked = dev.status()
    assert.ok(blocked.samples > before, 'the runtime kept sampling while JS was blocked')
    assert.deepEqual(blocked.last_sample.temperatures[0].temp_c, { status: 'fault', value: 'sensor_fault' })
    assert.ok(blocked.alerts.some((a) => a.code === 'sensor_untrusted'), JSON.stringify(blocked.alerts))
    cpu = 44.5
    await eventually(() => dev.status().samples > before + 3, 'sampling goes on')
    await telemetryHas(44.5)
    // A throwing sensor in a running device: a fault (fail-safe), not a crash.
    broken = true
    await eventually(() => dev.status().last_sample?.temperatures[0].temp_c.status === 'fault', 'cpu fault in the sample')
    await eventually(() => dev.status().alerts.length > 0, 'an alert for the faulty sensor')
    assert.equal(dev.running, true)
    broken = false
    await sleep(300)
    assert.equal(dev.status().last_sample.temperatures[0].temp_c.value, 44.5)
  } finally {
    if (dev) await dev.stop()
    await fleetd.stop()
  }
})
