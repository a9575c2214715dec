// The cost of a call from Node into the addon: one sample read and one policy
// evaluation (the figures of the closing note of issue #8). A measurement, not
// a test: build the release addon first, then run it on a quiet machine:
//
//   cd bindings/node && npx napi build --platform --release && node bench/crossing.js
'use strict'

const { Board, SafetyEngine, version } = require('..')

/** Best of `rounds` rounds of `n` calls, in µs per call. */
function measure(name, fn, n = 20_000, rounds = 5) {
  for (let i = 0; i < 2_000; i++) fn() // warm up
  let best = Infinity
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) fn()
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / n / 1000)
  }
  console.log(`${name.padEnd(44)} ${best.toFixed(2).padStart(8)} µs`)
}

const sim = Board.sim('pi4b', { seed: 7, loadPct: 60, ambientC: 28 })
sim.step(300)
const host = Board.fromCallbacks('pi4b', { cpu: () => 50.5 }, { fan0: () => {} })
const engine = new SafetyEngine('pi4b', 'scope = "fleet"\n[thermal]\nwarn_c = 65.0\n')
const sample = sim.sample()
const command = { type: 'set_fan_duty', fan: 'fan0', duty_pct: 50 }

console.log(`wrale ${version()} (${process.platform}-${process.arch}, node ${process.version})`)
measure('version() (an empty crossing)', () => version())
measure('sim board.sample()', () => sim.sample())
measure('host board.sample() (one JS sensor)', () => host.sample())
measure('sample.cpuTempC', () => sample.cpuTempC)
measure('sample.toJSON()', () => sample.toJSON())
measure('engine.evaluate(sample)', () => engine.evaluate(sample))
measure('engine.check(command)', () => engine.check(command))
