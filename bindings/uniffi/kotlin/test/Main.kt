// The Kotlin test program of the Wrale uniffi binding (run by scripts/test-kotlin):
// boards, the safety engine, twins and sync sessions, typed exceptions, and end to
// end against a real fleetd (the client, the event stream as a Flow, a
// Kotlin-hosted agent that enrolls and syncs, the program in docs/bindings.md).
//
//   java ... wrale.test.MainKt <fleetd binary> <example main class>
//
// Prints one line per check and "N passed, N failed"; exits 1 on any failure.
package wrale.test

import java.io.File
import java.net.HttpURLConnection
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files
import java.nio.file.attribute.PosixFilePermission
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.filter
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import wrale.*

var passed = 0
var failed = 0

class CheckFailed(message: String) : Exception(message)

inline fun ensure(cond: Boolean, what: () -> String) {
    if (!cond) throw CheckFailed(what())
}

fun <T> ensureEq(actual: T, expected: T, what: String) {
    if (actual != expected) throw CheckFailed("$what: expected <$expected>, got <$actual>")
}

/** Runs `body` and expects it to throw an `E` (a sealed subclass of WraleException). */
inline fun <reified E : Throwable> expectThrows(what: String, body: () -> Unit): E {
    try {
        body()
    } catch (e: Throwable) {
        if (e is E) return e
        throw CheckFailed("$what: expected ${E::class.simpleName}, got ${e::class.qualifiedName}: ${e.message}")
    }
    throw CheckFailed("$what: expected ${E::class.simpleName}, nothing was thrown")
}

fun check(name: String, body: suspend () -> Unit) {
    val t0 = System.nanoTime()
    try {
        runBlocking { withTimeout(120_000) { body() } }
        passed++
        println("ok   $name (${(System.nanoTime() - t0) / 1_000_000} ms)")
    } catch (e: Throwable) {
        failed++
        println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        if (e !is CheckFailed) e.printStackTrace(System.out)
    }
}

suspend fun <T> eventually(what: String, timeoutMs: Long = 20_000, f: suspend () -> T?): T {
    val deadline = System.currentTimeMillis() + timeoutMs
    var last: T? = null
    while (System.currentTimeMillis() < deadline) {
        last = f()
        if (last != null && last != false) return last
        delay(50)
    }
    throw CheckFailed("timed out waiting for $what (last: $last)")
}

fun tempDir(prefix: String): File = Files.createTempDirectory(prefix).toFile()

fun cpuReading(s: Sample): Reading = s.temperatures.first { it.kind == SensorKind.CPU }.tempC

fun fanRpm(board: Board): Double? = (board.sample().fans[0].rpm as? Reading.Ok)?.value

fun hotSample(): Sample {
    val board = Board.sim("pi4b", SimOptions(noise = false, loadPct = 100.0, ambientC = 35.0))
    board.step(900.0)
    return board.sample()
}

const val INTERLOCK = """
scope = "fleet"
[security]
lock_gpio_when_case_open = true
[[interlock]]
id = "gpio17-case-open"
deny = { command = "set_gpio", pin = 17, level = "high" }
when = { case_open = true }
"""

// ------------------------------------------------------------------ fleetd

class Fleetd(val url: String, val token: String, val password: String, private val proc: Process, private val root: File) {
    fun stop() {
        proc.destroy()
        if (!proc.waitFor(15, TimeUnit.SECONDS)) proc.destroyForcibly().waitFor()
        root.deleteRecursively()
    }
}

fun freePort(): Int = ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress()).use { it.localPort }

/** fleetd reads WRALE_* / FLEETD_* variables as config and refuses unknown ones. */
fun cleanEnv(pb: ProcessBuilder) {
    pb.environment().keys.removeIf { it.startsWith("WRALE_") || it.startsWith("FLEETD_") }
}

fun startFleetd(binary: String): Fleetd {
    val root = tempDir("wrale-kotlin-fleetd-")
    val data = File(root, "data")
    val admin = ProcessBuilder(binary, "admin", "create", "--name", "admin", "--data-dir", data.path)
        .redirectErrorStream(true)
    cleanEnv(admin)
    val p = admin.start()
    val out = p.inputStream.bufferedReader().readText()
    ensure(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0) { "fleetd admin create failed: $out" }
    val token = Regex("API token:\\s*(\\S+)").find(out)?.groupValues?.get(1)
    val password = Regex("password:\\s*(\\S+)").find(out)?.groupValues?.get(1)
    ensure(token != null && password != null) { "unexpected admin create output: $out" }
    val port = freePort()
    val log = File(root, "fleetd.log")
    val pb = ProcessBuilder(binary, "--bind", "127.0.0.1:$port", "--data-dir", data.path)
        .redirectErrorStream(true)
        .redirectOutput(log)
    cleanEnv(pb)
    val proc = pb.start()
    val url = "http://127.0.0.1:$port"
    val deadline = System.currentTimeMillis() + 30_000
    while (true) {
        val up = try {
            val c = URI("$url/health/ready").toURL().openConnection() as HttpURLConnection
            c.connectTimeout = 500
            c.readTimeout = 500
            c.responseCode == 200
        } catch (e: Exception) {
            false
        }
        if (up) break
        if (!proc.isAlive || System.currentTimeMillis() > deadline) {
            proc.destroyForcibly()
            throw CheckFailed("fleetd did not start: ${log.readText()}")
        }
        Thread.sleep(100)
    }
    return Fleetd(url, token!!, password!!, proc, root)
}

// ------------------------------------------------------------------ checks

fun boardChecks() {
    check("a sim sample is deterministic per seed") {
        val boards = listOf(7uL, 7uL, 8uL).map { Board.sim("pi4b", SimOptions(seed = it)) }
        for (b in boards) {
            b.setLoad(80.0)
            b.step(120.0)
        }
        val (a, b, c) = boards.map { it.sample() }
        ensureEq(a, b, "same seed, same sample")
        ensure(a != c) { "another seed gives another sample" }
        ensure(a.cpuTempC() != null) { "cpu temperature present" }
        ensureEq(a.temperatures[0].id, "cpu", "first sensor")
        ensureEq(a.atMs, boards[0].nowMs(), "sample time is the board clock")
        // The record round-trips through the crate's JSON shape.
        ensureEq(sampleFromJson(a.toJson()), a, "JSON round trip")
        ensureEq(boards[0].backend(), "sim", "backend")
        ensureEq(boards[0].model(), "pi4b", "model")
        ensure(boards[0].profileJson().contains("\"pi4b\"")) { "profile names the model" }
    }

    check("virtual time and load heat the board") {
        val board = Board.open("""{"backend": "sim", "noise": false, "cooling": "heatsink"}""")
        val t0 = board.nowMs()
        val cold = board.sample().cpuTempC()!!
        board.setLoad(100.0)
        board.step(600.0)
        ensureEq(board.nowMs() - t0, 600_000L, "virtual clock advanced")
        val hot = board.sample().cpuTempC()!!
        ensure(hot > cold + 10) { "hot $hot vs cold $cold" }
        board.setAmbient(40.0)
    }

    check("fault injection and clearing") {
        val board = Board.sim("pi4b", SimOptions(noise = false))
        board.setFan("fan0", 100.0)
        board.step(30.0)
        ensure((fanRpm(board) ?: 0.0) > 0) { "fan spins" }
        board.inject("fan_stall")
        board.step(30.0)
        ensureEq(fanRpm(board), 0.0, "stalled fan")
        board.clearFaults()
        board.step(30.0)
        ensure((fanRpm(board) ?: 0.0) > 0) { "fan spins again" }
        val before = board.sample().cpuTempC()
        board.inject("""{"kind": "sensor_stuck", "sensor": "cpu"}""")
        board.setLoad(100.0)
        board.step(300.0)
        ensureEq(board.sample().cpuTempC(), before, "stuck sensor")
        val e = expectThrows<WraleException.InvalidInput>("unknown fault") { board.inject("no_such_fault") }
        ensureEq(e.code, "invalid_argument", "code")
        ensure(e.description.contains("no_such_fault")) { e.description }
        val missing = Board.sim("pi4b", SimOptions(faults = listOf("""{"kind": "sensor_missing", "sensor": "cpu"}""")))
        ensureEq(cpuReading(missing.sample()), Reading.Missing, "missing sensor")
        val faulty = Board.sim("pi4b", SimOptions(faults = listOf("""{"kind": "sensor_fault", "sensor": "cpu"}""")))
        ensure(cpuReading(faulty.sample()) is Reading.Fault) { "faulted sensor: ${cpuReading(faulty.sample())}" }
        board.setSecurity(SecurityKind.CASE_SWITCH, true)
        ensure(board.sample().security.any { it.kind == SecurityKind.CASE_SWITCH && it.active == BoolReading.Ok(true) }) {
            "case switch active"
        }
    }

    check("fan, GPIO and PWM") {
        val board = Board.sim("pi4b", SimOptions())
        ensureEq(board.fans(), listOf("fan0"), "fans")
        board.setFan("fan0", 55.0)
        ensureEq(board.fanDuty("fan0"), 55.0, "fan duty")
        board.gpioWrite(17u, true)
        ensureEq(board.gpioRead(17u), true, "gpio high")
        board.gpioWrite(17u, false)
        ensureEq(board.gpioRead(17u), false, "gpio low")
        board.pwm(12u, 25.0, 1000.0)
        board.pwm(12u, 50.0, null)
    }

    check("hardware errors are typed") {
        val board = Board.sim("pi4b", SimOptions())
        ensureEq(expectThrows<WraleException.NotFound>("unknown fan") { board.setFan("fan9", 10.0) }.code, "not_found", "code")
        ensureEq(expectThrows<WraleException.InvalidInput>("duty 150") { board.setFan("fan0", 150.0) }.code, "invalid_argument", "code")
        expectThrows<WraleException>("gpio 99") { board.gpioWrite(99u, true) }
        expectThrows<WraleException.InvalidInput>("backend nope") { Board.open("""{"backend": "nope"}""") }
        expectThrows<WraleException.InvalidInput>("negative step") { board.step(-1.0) }
        expectThrows<WraleException.InvalidInput>("unknown model") { Board.sim("pi9z", SimOptions()) }
        // A linux board on an empty root: no GPIO chip, a typed NotFound.
        val root = tempDir("wrale-kotlin-sysfs-")
        try {
            val e = expectThrows<WraleException.NotFound>("linux board without hardware") {
                Board.open("""{"backend": "linux", "root": "${root.path}"}""")
            }
            ensureEq(e.code, "not_found", "code")
        } finally {
            root.deleteRecursively()
        }
        // An rpi board on a machine that is not a Pi is a typed error too.
        ensure(expectThrows<WraleException>("rpi backend") { Board.open("""{"backend": "rpi"}""") }.message != null) { "message" }
    }

    check("diagnostics report on the board") {
        val report = Board.sim("pi4b", SimOptions()).diagnostics(null)
        ensure(report.startsWith("{") && report.length > 2) { report }
    }
}

fun engineChecks() {
    check("a hot sample drives the fan and raises alerts") {
        val engine = SafetyEngine("pi4b")
        val decision = engine.evaluate(hotSample())
        val fan = decision.actions.filterIsInstance<Action.SetFanDuty>()
        ensure(fan.isNotEmpty()) { "fan actions: ${decision.actions}" }
        ensureEq(fan[0].fan, "fan0", "fan id")
        ensure(fan[0].dutyPct > 0) { "duty" }
        val sample = hotSample()
        val later = engine.evaluate(sample, sample.atMs + 10_000)
        val codes = later.alerts.filterIsInstance<AlertChange.Raised>().map { it.alert.code }.toSet()
        ensure("thermal_warning" in codes && "thermal_throttle" in codes) { "alerts $codes" }
        ensure(later.actions.any { it is Action.ThrottleWorkloads }) { "throttle action" }
        ensureEq(later.transitions, listOf(Transition(ThermalLevel.NORMAL, ThermalLevel.THROTTLE)), "transitions")
        ensureEq(engine.status().throttled, true, "throttled")
        ensureEq(engine.status().thermalLevel, ThermalLevel.THROTTLE, "level")
    }

    check("an untrusted sensor is fail-safe") {
        val board = Board.sim("pi4b", SimOptions(faults = listOf("""{"kind": "sensor_fault", "sensor": "cpu"}""")))
        val engine = SafetyEngine("pi4b")
        val decision = engine.evaluate(board.sample())
        ensureEq(engine.status().failSafe, true, "fail safe")
        ensure(decision.alerts.firstOrNull() is AlertChange.Raised) { "raised: ${decision.alerts}" }
    }

    check("command checks and typed refusals") {
        val engine = SafetyEngine("pi4b", INTERLOCK)
        val cmd = """{"type": "set_gpio", "pin": 17, "level": "high"}"""
        val verdict = engine.check(cmd, CheckOptions(actor = "user:ada", reason = "test"))
        ensure(verdict is Verdict.Refused) { "refused: $verdict" }
        verdict as Verdict.Refused
        ensureEq(verdict.rule, "interlock:gpio17-case-open", "rule")
        ensure(verdict.reason.isNotEmpty()) { "reason" }
        ensureEq(engine.check("""{"type": "set_gpio", "pin": 27, "level": "high"}""", CheckOptions()), Verdict.Allowed, "pin 27")
        val e = expectThrows<WraleException.PolicyViolation>("require") { engine.require(cmd, CheckOptions()) }
        ensureEq(e.code, "policy_violation", "code")
        ensure(e.description.startsWith("policy violation: rule interlock:gpio17-case-open: ")) { e.description }
        ensure(e.message!!.contains("policy_violation")) { "Kotlin message: ${e.message}" }
        ensureEq(engine.admit("""{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 100}""", CheckOptions()), Verdict.Allowed, "admit")
        ensureEq(expectThrows<WraleException.InvalidInput>("unknown command") { engine.check("""{"type": "warp_drive"}""", CheckOptions()) }.code, "invalid_argument", "code")
        ensureEq(expectThrows<WraleException.InvalidInput>("bad actor") { engine.check(cmd, CheckOptions(actor = "robot:r2")) }.code, "invalid_actor", "code")
        // Every exception is a WraleException (one catch for all).
        try {
            engine.require(cmd, CheckOptions())
            throw CheckFailed("require did not throw")
        } catch (e: WraleException) {
            ensure(e is WraleException.PolicyViolation) { "sealed subclass" }
        }
    }

    check("policies from text and files; loosening or broken ones are refused") {
        val engine = SafetyEngine("pi4b", null)
        engine.load("scope = \"fleet\"\n[thermal]\nwarn_c = 65.0\n")
        ensureEq(engine.thresholds().warnC, 65.0, "warn_c")
        ensureEq(expectThrows<WraleException.PolicyViolation>("loosen") { engine.load("scope = \"fleet\"\n[thermal]\ncritical_c = 95.0\n") }.code, "policy_violation", "code")
        val e = expectThrows<WraleException.InvalidInput>("broken") { engine.load("scope = \"fleet\"\n[thermal]\nwarn_c = \"hot\"\n", "fleet.toml") }
        ensureEq(e.code, "invalid_policy", "code")
        ensure(e.description.startsWith("fleet.toml")) { e.description }
        ensureEq(engine.thresholds().warnC, 65.0, "old policy stays")
        val dir = tempDir("wrale-kotlin-policy-")
        val file = File(dir, "site.toml")
        file.writeText("scope = \"fleet\"\n[thermal]\nwarn_c = 61.0\n")
        engine.loadFile(file.path)
        ensureEq(engine.thresholds().warnC, 61.0, "warn_c from file")
        expectThrows<WraleException.NotFound>("missing file") { engine.loadFile(File(dir, "nope.toml").path) }
        dir.deleteRecursively()
        engine.reset()
        ensureEq(engine.status().alerts, emptyList<Alert>(), "reset")
        expectThrows<WraleException.InvalidInput>("unknown model") { SafetyEngine("pi9z", null) }
    }
}

fun twinChecks() {
    val info = """{"id": "kt-twin-1", "model": "pi4b", "labels": {"lang": "kotlin"}}"""
    check("twin: create, edit, save, load, history") {
        val twin = Twin(info, "user:ada", 1_000)
        ensureEq(twin.device(), "kt-twin-1", "device")
        ensure(twin.metaJson().contains("kotlin")) { twin.metaJson() }
        ensureEq(twin.editDesired("""{"warn": 63.0}""", "user:ada", 2_000), true, "changed")
        ensureEq(twin.editDesired("""{"warn": 63.0}""", "user:ada", 2_500), false, "unchanged")
        ensure(twin.desiredJson().contains("63")) { twin.desiredJson() }
        ensureEq(twin.report(mapOf("cpu_temp_c" to 51.0), 3_000), true, "reported")
        ensure(twin.reportedJson().contains("51")) { twin.reportedJson() }
        val copy = Twin.load(twin.save(), "user:bob")
        ensureEq(copy.heads(), twin.heads(), "heads after load")
        val history = twin.history()
        ensure(history.any { it.author == "user:ada" && it.atMs == 2_000L }) { "history: $history" }
        // Roll back to before the edit.
        ensureEq(twin.rollback(listOf(history.first().hash), "user:ada", 4_000), true, "rolled back")
        ensure(!twin.desiredJson().contains("63")) { twin.desiredJson() }
        ensureEq(expectThrows<WraleException.InvalidInput>("bad author") { Twin(info, "ada", 1) }.code, "invalid_author", "code")
        expectThrows<WraleException>("garbage bytes") { Twin.load(byteArrayOf(1, 2, 3), "user:ada") }
    }

    check("twin: merge, conflicts, resolve, sync sessions") {
        val a = Twin(info, "user:ada", 1_000)
        val b = Twin.load(a.save(), "user:bob")
        a.setField("desired.warn_c", "61.0", "user:ada", 2_000)
        b.setField("desired.warn_c", "62.0", "user:bob", 2_001)
        a.merge(b)
        val conflicts = a.conflicts()
        ensureEq(conflicts.size, 1, "one conflict")
        ensureEq(conflicts[0].field, "desired.warn_c", "field")
        ensureEq(conflicts[0].values.map { it.author }.toSet(), setOf("user:ada", "user:bob"), "authors")
        a.resolve("desired.warn_c", "61.5", "user:ada", 3_000)
        ensureEq(a.conflicts(), emptyList<TwinConflict>(), "resolved")
        // Two replicas converge through sync sessions (frames in, frames out).
        val c = Twin(info, "device:kt-twin-1", 500)
        val sa = SyncSession(a, "c")
        val sc = SyncSession(c, "a")
        c.report(mapOf("cpu_temp_c" to 48.0), 3_500)
        var rounds = 0
        while (rounds < 20) {
            val fa = sa.generate(a)
            val fc = sc.generate(c)
            if (fa == null && fc == null) break
            if (fa != null) sc.receive(c, fa, 4_000)
            if (fc != null) sa.receive(a, fc, 4_000)
            rounds++
        }
        ensureEq(a.heads().sorted(), c.heads().sorted(), "converged heads")
        ensure(c.desiredJson().contains("61.5")) { c.desiredJson() }
        expectThrows<WraleException>("garbage frame") { sa.receive(a, byteArrayOf(9, 9, 9), 5_000) }
        expectThrows<WraleException.InvalidInput>("bad path") { a.setField("warn_c", "1", "user:ada", 1) }
    }
}

fun hostChecks() {
    check("a board from host callbacks: the program's sensor and fan, under an agent") {
        var temp = 45.0
        val duties = CopyOnWriteArrayList<Double>()
        val builder = HostBoardBuilder("pi4b")
        builder.temperature("cpu", SensorKind.CPU, object : HostTemperature {
            override fun readCelsius(): Double = temp
        })
        builder.fan("fan0", object : HostFan {
            override fun setDuty(dutyPct: Double) {
                duties.add(dutyPct)
            }
        })
        val board = builder.build()
        ensureEq(board.backend(), "host", "backend")
        ensureEq(board.sample().cpuTempC(), 45.0, "the host's reading")
        board.setFan("fan0", 40.0)
        ensureEq(duties.last(), 40.0, "the host's fan got the duty")
        ensureEq(board.fanDuty("fan0"), 40.0, "fan duty")
        expectThrows<WraleException.InvalidInput>("built twice") { builder.build() }
        // A sensor callback that throws is a faulted reading; the engine goes fail-safe.
        val bad = HostBoardBuilder("pi4b")
        bad.temperature("cpu", SensorKind.CPU, object : HostTemperature {
            override fun readCelsius(): Double = throw IllegalStateException("unplugged")
        })
        val badSample = bad.build().sample()
        ensure(cpuReading(badSample) is Reading.Fault) { "fault: ${cpuReading(badSample)}" }
        val engine = SafetyEngine("pi4b")
        engine.evaluate(badSample)
        ensureEq(engine.status().failSafe, true, "fail-safe on a throwing sensor")
        // An agent on the host board drives the host's fan through the callback.
        temp = 86.0
        val dir = tempDir("wrale-kotlin-host-")
        val agent = Agent.start(board, dir.path, AgentOptions(deviceId = "kt-host", intervalS = 0.05))
        try {
            eventually("the engine drove the host fan") { duties.any { it >= 99.0 } }
        } finally {
            agent.stop()
            dir.deleteRecursively()
        }
    }
}

/** Not a check: the cost of a sample read and of a policy evaluation across the FFI. */
fun timing() {
    val board = Board.sim("pi4b", SimOptions(seed = 1uL, loadPct = 50.0))
    val engine = SafetyEngine("pi4b")
    val sample = board.sample()
    repeat(500) { board.sample(); engine.evaluate(sample) }
    val n = 2_000
    var t = System.nanoTime()
    repeat(n) { board.sample() }
    val sampleUs = (System.nanoTime() - t) / 1_000.0 / n
    t = System.nanoTime()
    repeat(n) { engine.evaluate(sample) }
    val evalUs = (System.nanoTime() - t) / 1_000.0 / n
    println("timing: Board.sample() %.1f µs, SafetyEngine.evaluate() %.1f µs (mean of %d calls after 500 warm-up calls)".format(sampleUs, evalUs, n))
}

fun fleetChecks(fleetd: Fleetd, exampleClass: String) {
    check("fleet errors: unreachable, bad URL, bad token, not found") {
        val down = expectThrows<WraleException.Unavailable>("unreachable") { runBlocking { FleetClient("http://127.0.0.1:9").devices(DeviceQuery()) } }
        ensureEq(down.code, "transport", "code")
        expectThrows<WraleException.InvalidInput>("bad url") { FleetClient("not a url") }
        expectThrows<WraleException.AuthException>("bad token") { runBlocking { FleetClient(fleetd.url, "wrt_bogus").devices(DeviceQuery()) } }
        val fleet = FleetClient(fleetd.url, fleetd.token)
        val nf = expectThrows<WraleException.NotFound>("no device") { runBlocking { fleet.device("no-such-device") } }
        ensure(nf.details?.contains("404") == true) { "details: ${nf.details}" }
        expectThrows<WraleException.InvalidInput>("group scope without id") { runBlocking { fleet.config("group") } }
        expectThrows<WraleException.InvalidInput>("bad event kind") {
            runBlocking { fleet.subscribe(object : EventListener {
                override fun onEvent(event: FleetEvent) {}
                override fun onEnd(error: String?) {}
            }, listOf("nope")) }
        }
    }

    check("fleet: login, groups, config, audit") {
        val fleet = FleetClient(fleetd.url)
        fleet.ready()
        fleet.login("admin", fleetd.password)
        ensure(fleet.token() != null) { "session token" }
        ensure(fleet.whoami().contains("admin")) { fleet.whoami() }
        fleet.createGroup("kt-lab", "Kotlin lab")
        ensure(fleet.groups().any { it.id == "kt-lab" }) { "group listed" }
        ensureEq(fleet.group("kt-lab").name, "Kotlin lab", "group name")
        fleet.patchConfig("group", """{"warn_c": 66}""", "kt-lab")
        ensure(fleet.config("group", "kt-lab").contains("66")) { "layer" }
        ensure(fleet.audit().contains("kt-lab")) { "audit names the group" }
        val e = expectThrows<WraleException.ConflictException>("group twice") { runBlocking { fleet.createGroup("kt-lab", "again") } }
        ensure(e.code.isNotEmpty()) { "code" }
        fleet.deleteGroup("kt-lab")
        expectThrows<WraleException.NotFound>("deleted group") { runBlocking { fleet.group("kt-lab") } }
    }

    check("a Kotlin-hosted agent enrolls, syncs, ships telemetry and obeys the fleet") {
        val fleet = FleetClient(fleetd.url, fleetd.token)
        fleet.createGroup("kt-devices", "Kotlin devices")
        val enrollment = fleet.createEnrollmentToken("""{"group": "kt-devices", "uses": 1, "expires_in": "1h"}""")
        val token = Regex("\"token\"\\s*:\\s*\"([^\"]+)\"").find(enrollment)?.groupValues?.get(1)
        ensure(token != null) { "enrollment token in $enrollment" }

        // The event stream as a Flow (collected in the background) and as a callback.
        val seen = CopyOnWriteArrayList<FleetEvent>()
        val ended = CopyOnWriteArrayList<String?>()
        val sub = fleet.subscribe(object : EventListener {
            override fun onEvent(event: FleetEvent) { seen.add(event) }
            override fun onEnd(error: String?) { ended.add(error) }
        }, listOf("device", "twin"))
        val board = Board.sim("pi4b", SimOptions(seed = 5uL, loadPct = 70.0, ambientC = 30.0))
        val dir = tempDir("wrale-kotlin-agent-")
        kotlinx.coroutines.coroutineScope {
            val flowEvent = launch {
                val e = fleet.events(kinds = listOf("device", "twin"), device = "kt-sim-1").first()
                ensureEq(e.device, "kt-sim-1", "flow event device")
            }
            delay(200)
            val agent = Agent.enroll(board, dir.path, AgentOptions(
                deviceId = "kt-sim-1",
                fleetUrl = fleetd.url,
                enrollmentToken = token,
                labels = mapOf("lang" to "kotlin"),
                intervalS = 0.05,
            ))
            try {
                ensureEq(agent.id(), "kt-sim-1", "id")
                ensureEq(agent.isRunning(), true, "running")
                eventually("device listed") {
                    fleet.devices(DeviceQuery(labels = mapOf("lang" to "kotlin"))).any { it.id == "kt-sim-1" }
                }
                ensureEq(fleet.devices(DeviceQuery(group = "kt-devices")).map { it.id }, listOf("kt-sim-1"), "group members")
                val summary = fleet.device("kt-sim-1")
                ensureEq(summary.group, "kt-devices", "group")
                ensureEq(summary.model, "pi4b", "model")
                ensureEq(summary.labels["lang"], "kotlin", "labels")
                // The credential is kept, mode 0600.
                val cred = File(dir, "fleet-credential")
                ensure(cred.readText().startsWith("wrd_")) { "credential" }
                ensureEq(Files.getPosixFilePermissions(cred.toPath()), setOf(PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE), "mode 0600")
                eventually("agent connected") { agent.agentStatus().connected }
                ensureEq(agent.agentStatus().mode, "normal", "mode")
                eventually("reported readings in fleetd") { fleet.twin("kt-sim-1").contains("reading.cpu_temp_c") }
                ensure(fleet.twinHistory("kt-sim-1").startsWith("[")) { "history" }
                ensure(fleet.twinConflicts("kt-sim-1").startsWith("[")) { "conflicts" }
                eventually("telemetry acked") { agent.agentStatus().telemetryAcked > 0uL }
                eventually("telemetry points") {
                    val t = fleet.telemetry("kt-sim-1", "cpu_temp_c", 1_767_225_600_000, board.nowMs() + 1_000, "raw")
                    !t.contains("\"points\":[]") && t.contains("\"points\"")
                }
                val status = agent.status()
                ensure(status.samples > 0uL) { "samples" }
                ensure(status.lastSample?.cpuTempC() != null) { "last sample" }
                // Fleet config reaches the device and changes its policy.
                fleet.patchConfig("device", """{"warn_c": 62}""", "kt-sim-1")
                eventually("warn_c applied on the device") { agent.thresholds().warnC == 62.0 }
                ensure(agent.desiredJson().contains("62")) { agent.desiredJson() }
                ensure(fleet.effectiveConfig("kt-sim-1").contains("62")) { "effective config" }
                // A rollout of a desired change reaches the device.
                val rollout = fleet.createRollout("""{"id": "kt-cool", "change": {"fan_profile": "cool"}, "devices": ["kt-sim-1"], "canary": {"kind": "devices", "devices": ["kt-sim-1"]}}""")
                ensure(rollout.contains("kt-cool")) { rollout }
                ensure(fleet.rollouts().contains("kt-cool")) { "rollouts" }
                ensure(fleet.rollout("kt-cool").contains("kt-cool")) { "rollout" }
                eventually("rollout change on the device") { agent.desiredJson().contains("\"cool\"") }
                expectThrows<WraleException.NotFound>("no rollout") { runBlocking { fleet.rollout("no-such-rollout") } }
                // Commands: done on the board, or refused by the device's engine.
                val done = fleet.sendCommand("kt-sim-1", """{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 100}""", "test")
                ensure(done.contains("done")) { done }
                ensureEq(board.fanDuty("fan0"), 100.0, "fan duty set by the command")
                val refused = expectThrows<WraleException.PolicyViolation>("reboot") {
                    runBlocking { fleet.sendCommand("kt-sim-1", """{"type": "reboot"}""", "test") }
                }
                ensureEq(refused.code, "policy_violation", "code")
                ensure(refused.details?.contains("422") == true) { "details ${refused.details}" }
                ensure(fleet.alerts(AlertQuery(state = "active")).startsWith("[")) { "alerts" }
                // Both event consumers saw the device.
                eventually("callback events of kt-sim-1") { seen.any { it.device == "kt-sim-1" } }
                withTimeout(20_000) { flowEvent.join() }
            } finally {
                sub.stop()
                sub.join()
                agent.stop()
            }
            ensureEq(sub.isRunning(), false, "subscription stopped")
            ensureEq(ended.toList(), listOf<String?>(null), "on_end once, without error")
            ensureEq(agent.isRunning(), false, "agent stopped")
            ensureEq(expectThrows<WraleException.InvalidInput>("stopped agent") { agent.status() }.code, "stopped", "code")
            agent.stop()
        }
        dir.deleteRecursively()
    }

    check("an agent without a fleet runs degraded and applies its policy") {
        val board = Board.sim("pi4b", SimOptions(noise = false, loadPct = 100.0, ambientC = 35.0))
        val dir = tempDir("wrale-kotlin-local-")
        val agent = Agent.start(board, dir.path, AgentOptions(deviceId = "kt-local", intervalS = 0.05, policies = listOf("scope = \"fleet\"\n[thermal]\nwarn_c = 60.0\n")))
        try {
            ensureEq(agent.thresholds().warnC, 60.0, "policy layer")
            eventually("samples taken") { agent.status().samples > 5uL }
            ensureEq(agent.agentStatus().mode, "degraded", "degraded without a fleet")
            eventually("the engine drove the fan") { board.fanDuty("fan0") > 0.0 }
        } finally {
            agent.stop()
            dir.deleteRecursively()
        }
        expectThrows<WraleException.InvalidInput>("url without credential") {
            Agent.start(board, dir.path, AgentOptions(deviceId = "kt-x", fleetUrl = fleetd.url))
        }
    }

    check("the Kotlin program in docs/bindings.md runs against fleetd") {
        val java = File(System.getProperty("java.home"), "bin/java").path
        val pb = ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
            "-Djna.library.path=" + System.getProperty("jna.library.path"), exampleClass)
            .redirectErrorStream(true)
        cleanEnv(pb)
        pb.environment()["WRALE_URL"] = fleetd.url
        pb.environment()["WRALE_TOKEN"] = fleetd.token
        val p = pb.start()
        val out = p.inputStream.bufferedReader().readText()
        ensure(p.waitFor(60, TimeUnit.SECONDS)) { "example timed out" }
        ensureEq(p.exitValue(), 0, "example exit code (output: $out)")
        ensure(Regex("cpu \\d+\\.\\d °C").containsMatchIn(out)) { out }
        ensure(out.contains("action: SetFanDuty")) { out }
        ensure(out.contains("refused: policy_violation")) { out }
        ensure(out.contains("kt-sim-1 pi4b")) { out }
        print(out.lines().joinToString("") { "     | $it\n" })
    }
}

fun main(args: Array<String>) {
    val fleetdBinary = args.getOrNull(0) ?: error("usage: MainKt <fleetd binary> <example main class>")
    val exampleClass = args.getOrNull(1) ?: "wrale.example.ExampleKt"
    println("wrale ${version()}")
    boardChecks()
    engineChecks()
    twinChecks()
    hostChecks()
    timing()
    val fleetd = try {
        startFleetd(fleetdBinary)
    } catch (e: Throwable) {
        failed++
        println("FAIL start fleetd: ${e.message}")
        null
    }
    if (fleetd != null) {
        try {
            fleetChecks(fleetd, exampleClass)
        } finally {
            fleetd.stop()
        }
    }
    println()
    println("kotlin: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
