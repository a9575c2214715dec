// Test helpers: a real fleetd (the binary built from this workspace) on a free
// port of 127.0.0.1 with a temporary data directory and an admin token.
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const REPO = path.resolve(__dirname, '..', '..', '..')

function fleetdBinary() {
  if (process.env.NODE_TEST_FLEETD) return process.env.NODE_TEST_FLEETD
  const target = process.env.CARGO_TARGET_DIR || path.join(REPO, 'target')
  return path.join(target, 'debug', 'fleetd')
}

// fleetd reads WRALE_* / FLEETD_* variables as config and refuses unknown ones.
function cleanEnv() {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('WRALE_') && !k.startsWith('FLEETD_')) env[k] = v
  }
  return env
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Starts fleetd; returns {url, token, password, dataDir, stop()}. */
async function startFleetd() {
  const binary = fleetdBinary()
  if (!fs.existsSync(binary)) {
    throw new Error(`fleetd binary ${binary} not found: run \`cargo build -p fleetd\` (scripts/test-node does)`)
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wrale-node-fleetd-'))
  const dataDir = path.join(root, 'data')
  const env = cleanEnv()
  const out = execFileSync(binary, ['admin', 'create', '--name', 'admin', '--data-dir', dataDir], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  })
  const token = /API token:\s*(\S+)/.exec(out)
  const password = /password:\s*(\S+)/.exec(out)
  if (!token || !password) throw new Error(`unexpected admin create output: ${out}`)
  const port = await freePort()
  const log = fs.openSync(path.join(root, 'fleetd.log'), 'w')
  const proc = spawn(binary, ['--bind', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    env,
    stdio: ['ignore', log, log],
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    try {
      const r = await fetch(`${url}/health/ready`)
      if (r.status === 200) break
    } catch {}
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL')
      throw new Error(`fleetd did not start: ${fs.readFileSync(path.join(root, 'fleetd.log'), 'utf8')}`)
    }
    await sleep(100)
  }
  return {
    url,
    token: token[1],
    password: password[1],
    dataDir,
    root,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r))
        proc.kill('SIGTERM')
        const t = setTimeout(() => proc.kill('SIGKILL'), 15_000)
        await exited
        clearTimeout(t)
      }
      fs.closeSync(log)
      fs.rmSync(root, { recursive: true, force: true })
    },
  }
}

/** Polls `fn` (maybe async) until it returns a truthy value; returns it. */
async function eventually(fn, what = 'condition', timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    last = await fn()
    if (last) return last
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`)
    await sleep(50)
  }
}

function tempDir(prefix = 'wrale-node-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

module.exports = { REPO, startFleetd, eventually, tempDir, sleep }
