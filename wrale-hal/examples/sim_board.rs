//! A simulated Raspberry Pi under a load ramp in a 25 °C room, with a trivial fan
//! rule, printed as a table.
//!
//! ```text
//! cargo run -p wrale-hal --example sim_board -- [--seconds N] [--seed N] [--model pi4b] [--realtime]
//! ```
//!
//! The fan rule here (duty proportional above 50 °C, full at 70 °C) is deliberately
//! trivial: the real policy engine lives in `wrale-core` and metald applies it.
//! Virtual time runs as fast as the CPU allows (600 simulated seconds take a
//! fraction of a second); `--realtime` runs on the wall clock instead.

use std::process::ExitCode;
use std::time::Duration;

use wrale_core::board::BoardModel;
use wrale_core::model::{Reading, ThrottleFlags};
use wrale_core::units::{Celsius, Percent};
use wrale_hal::sim::{SimBoard, SimConfig, SimTime};

struct Args {
    seconds: u64,
    seed: u64,
    model: BoardModel,
    realtime: bool,
}

const USAGE: &str = "usage: sim_board [--seconds N] [--seed N] [--model pi3bplus|pi4b|pi5|cm4|zero2w|generic] [--realtime]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 600,
        seed: 1,
        model: BoardModel::Pi4B,
        realtime: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--model" => {
                args.model = value("--model")?.parse().map_err(|e| format!("{e}"))?;
            }
            "--realtime" => args.realtime = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn fmt<T>(r: Reading<T>, f: impl Fn(T) -> String) -> String {
    match r {
        Reading::Ok(v) => f(v),
        Reading::Missing => "-".into(),
        Reading::Fault(k) => format!("!{k}"),
    }
}

/// The firmware flags as letters: U under-voltage, C frequency capped, T throttled,
/// S soft limit; upper case now, lower case "has occurred".
fn flags(f: ThrottleFlags) -> String {
    let now = [
        (f.under_voltage, 'U'),
        (f.freq_capped, 'C'),
        (f.throttled, 'T'),
        (f.soft_temp_limit, 'S'),
    ];
    let past = [
        (f.under_voltage_occurred, 'u'),
        (f.freq_capped_occurred, 'c'),
        (f.throttled_occurred, 't'),
        (f.soft_temp_limit_occurred, 's'),
    ];
    let s: String = now
        .iter()
        .chain(past.iter())
        .map(|(on, c)| if *on { *c } else { '.' })
        .collect();
    s
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sim_board: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let config = SimConfig {
        model: args.model,
        seed: args.seed,
        time: if args.realtime {
            SimTime::Realtime
        } else {
            SimTime::Virtual
        },
        ambient_c: Some(Celsius(25.0)),
        ..SimConfig::default()
    };
    let sim = match SimBoard::new(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sim_board: {e}");
            return ExitCode::FAILURE;
        }
    };
    let board = sim.board();
    let fan = board.fans().first().cloned();
    let every = (args.seconds / 40).max(5);
    println!(
        "{} ({}), 25 °C room, load ramp 0 -> 100 % over {} s, seed {}{}",
        board.profile().name,
        board.profile().model,
        args.seconds * 2 / 3,
        args.seed,
        if args.realtime { ", real time" } else { "" }
    );
    println!(
        "{:>6}  {:>7}  {:>5}  {:>8}  {:>6}  {:>7}  {:>6}  {:>6}  {:>8}  {:>5}",
        "t [s]", "cpu °C", "duty%", "fan rpm", "V", "I [A]", "P [W]", "MHz", "flags", "load%"
    );
    for t in 0..=args.seconds {
        // Load ramp over the first two thirds of the run, then hold at 100 %.
        let ramp = (t as f64 / (args.seconds as f64 * 2.0 / 3.0).max(1.0)).min(1.0);
        sim.set_load(Percent::saturating(ramp * 100.0));
        let s = board.sample();
        // Trivial fan rule: 0 % at 50 °C rising to 100 % at 70 °C.
        if let (Some(fan), Some(cpu)) = (&fan, s.cpu_temp().ok()) {
            let duty = Percent::saturating((cpu.get() - 50.0) * 5.0);
            if let Err(e) = fan.set_duty(duty) {
                eprintln!("sim_board: fan: {e}");
            }
        }
        if t % every == 0 {
            let (duty, rpm) = s
                .fans
                .first()
                .map(|f| {
                    (
                        fmt(f.duty, |d| format!("{:.0}", d.get())),
                        fmt(f.rpm, |r| format!("{:.0}", r.get())),
                    )
                })
                .unwrap_or(("-".into(), "-".into()));
            println!(
                "{:>6}  {:>7}  {:>5}  {:>8}  {:>6}  {:>7}  {:>6}  {:>6}  {:>8}  {:>5}",
                t,
                fmt(s.cpu_temp(), |c| format!("{:.1}", c.get())),
                duty,
                rpm,
                fmt(s.supply_voltage, |v| format!("{:.3}", v.get())),
                fmt(s.current, |a| format!("{:.3}", a.get())),
                fmt(s.power, |w| format!("{:.2}", w.get())),
                fmt(s.cpu_freq, |f| format!("{:.0}", f.get())),
                fmt(s.throttle, flags),
                fmt(s.cpu_load, |l| format!("{:.0}", l.get())),
            );
        }
        board.sleep(Duration::from_secs(1));
    }
    ExitCode::SUCCESS
}
