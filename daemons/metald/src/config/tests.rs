//! Config layering, precedence and error messages.

use super::*;
use wrale_hal::SimConfig;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metald.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_follow_the_conventions() {
    let c = Loader::new().load().unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.api.bind, "0.0.0.0:8700".parse().unwrap());
    assert_eq!(c.sampling.interval, Duration::from_secs(1));
    assert_eq!(c.data.dir, PathBuf::from("/var/lib/wrale/metald"));
    assert_eq!(c.shutdown.command, ["systemctl", "poweroff"]);
    assert_eq!(c.backend_name(), "linux");
    assert!(c.api.tokens.is_empty() && !c.api.public_metrics);
    assert_eq!(c.log.format, LogFormat::Human);
}

#[test]
fn precedence_is_defaults_file_env_flags() {
    let (_d, path) = file("[sampling]\ninterval = \"3s\"\n[api]\nbind = \"127.0.0.1:1\"\n");
    let base = Loader::new().file(&path);
    let c = base.clone().load().unwrap();
    assert_eq!(c.sampling.interval, Duration::from_secs(3));
    assert_eq!(c.api.bind.port(), 1);

    let with_env = base.clone().env(env(&[
        ("WRALE_SAMPLING__INTERVAL", "2s"),
        ("HOME", "/root"),
    ]));
    let c = with_env.load().unwrap();
    assert_eq!(c.sampling.interval, Duration::from_secs(2));
    assert_eq!(c.api.bind.port(), 1, "untouched keys keep the file's value");

    let with_flag = with_env.flags(FlagOverrides {
        sampling_interval: Some("500ms".into()),
        ..FlagOverrides::default()
    });
    assert_eq!(
        with_flag.load().unwrap().sampling.interval,
        Duration::from_millis(500)
    );
}

#[test]
fn env_nesting_and_typed_values() {
    let c = Loader::new()
        .env(env(&[
            ("WRALE_HAL__BACKEND", "sim"),
            ("WRALE_HAL__SEED", "7"),
            // Sorts before BACKEND, must survive the backend choice.
            ("WRALE_HAL__AMBIENT_C", "30.5"),
            ("WRALE_API__PUBLIC_METRICS", "true"),
            ("WRALE_SHUTDOWN__COMMAND", "[\"halt\", \"-p\"]"),
            ("WRALE_API__BIND", "127.0.0.1:9000"),
            ("WRALE_CONFIG", "/ignored/here.toml"),
        ]))
        .load()
        .unwrap();
    assert_eq!(
        c.hal,
        BackendConfig::Sim(SimConfig {
            seed: 7,
            ambient_c: Some(wrale_core::units::Celsius(30.5)),
            ..SimConfig::default()
        })
    );
    assert!(c.api.public_metrics);
    assert_eq!(c.shutdown.command, ["halt", "-p"]);
    assert_eq!(c.api.bind.port(), 9000);
}

#[test]
fn switching_backend_drops_the_old_backends_keys() {
    let (_d, path) = file("[hal]\nbackend = \"linux\"\nroot = \"/srv/fake\"\n");
    let c = Loader::new()
        .file(&path)
        .flags(FlagOverrides {
            backend: Some("sim".into()),
            ..FlagOverrides::default()
        })
        .load()
        .unwrap();
    assert_eq!(c.hal, BackendConfig::Sim(SimConfig::default()));
    // Same backend: the file's keys stay.
    let c = Loader::new()
        .file(&path)
        .env(env(&[("WRALE_HAL__BACKEND", "linux")]))
        .load()
        .unwrap();
    let BackendConfig::Linux(l) = c.hal else {
        panic!("{:?}", c.hal)
    };
    assert_eq!(l.root, PathBuf::from("/srv/fake"));
}

#[test]
fn toml_syntax_errors_name_file_and_line() {
    let (_d, path) = file("[api]\nbind = \"127.0.0.1:1\"\n[sampling\ninterval = \"1s\"\n");
    let e = Loader::new().file(&path).load().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::File { .. }), "{e:?}");
    assert!(
        msg.contains("metald.toml") && msg.contains("line 3"),
        "{msg}"
    );
}

#[test]
fn file_type_errors_name_line_and_key() {
    let (_d, path) = file("[sampling]\ninterval = 5\n");
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("line 2") && msg.contains("interval"), "{msg}");

    let (_d, path) = file("[sampling]\ninterval = \"soon\"\n");
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("line 2") && msg.contains("soon"), "{msg}");

    let (_d, path) = file("[sampling]\nintervall = \"1s\"\n");
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("intervall") && msg.contains("line 2"), "{msg}");

    let (_d, path) = file("[hal]\nbackend = \"gpio\"\n");
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("gpio") && msg.contains("line"), "{msg}");
}

#[test]
fn env_errors_name_the_variable_and_key() {
    let e = Loader::new()
        .env(env(&[("WRALE_SAMPLING__INTERVAL", "fast")]))
        .load()
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.key(), Some("sampling.interval"));
    assert!(
        msg.contains("WRALE_SAMPLING__INTERVAL") && msg.contains("fast"),
        "{msg}"
    );

    let e = Loader::new()
        .env(env(&[("WRALE_API__BIND", "everywhere")]))
        .load()
        .unwrap_err();
    assert_eq!(e.key(), Some("api.bind"), "{e}");

    let e = Loader::new()
        .env(env(&[("WRALE_SAMPLNG__INTERVAL", "1s")]))
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("samplng"), "{e}");

    let e = Loader::new()
        .env(env(&[("WRALE_INTERVAL", "1s")]))
        .load()
        .unwrap_err();
    assert!(
        matches!(&e, ConfigError::Env { var, .. } if var == "WRALE_INTERVAL"),
        "{e}"
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let e = Loader::new()
        .flags(FlagOverrides {
            sampling_interval: Some("1ms".into()),
            ..FlagOverrides::default()
        })
        .load()
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.key(), Some("sampling.interval"));
    assert!(
        msg.contains("--sampling-interval") && msg.contains("out of range"),
        "{msg}"
    );
}

#[test]
fn validation_names_the_key() {
    let cases = [
        (
            "[sampling]\ninterval = \"2h\"\n",
            "sampling.interval",
            "out of range",
        ),
        ("[shutdown]\ncommand = []\n", "shutdown.command", "program"),
        (
            "[[workloads]]\nname = \"a\"\ncommand = \"true\"\n[[workloads]]\nname = \"a\"\ncommand = \"true\"\n",
            "workloads[1].name",
            "duplicate",
        ),
        (
            "[[workloads]]\nname = \"Bad_Name\"\ncommand = \"true\"\n",
            "workloads[0].name",
            "workload name",
        ),
        (
            "[[workloads]]\nname = \"a\"\ncommand = \"true\"\nbackoff = { initial = \"10s\", max = \"1s\" }\n",
            "workloads[0].backoff",
            "initial <= max",
        ),
        (
            "[board]\nprofile = \"/nonexistent/profile.toml\"\n",
            "board.profile",
            "cannot read",
        ),
    ];
    for (text, key, problem) in cases {
        let (_d, path) = file(text);
        let e = Loader::new().file(&path).load().unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.key(), Some(key), "{msg}");
        assert!(
            msg.contains(problem) && msg.contains("metald.toml"),
            "{msg}"
        );
    }
}

#[test]
fn token_hashes_are_checked() {
    let (_d, path) =
        file("[[api.tokens]]\nname = \"ops\"\nrole = \"operator\"\nhash = \"plaintext\"\n");
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("sha256") && msg.contains("line"), "{msg}");
    let (_d, path) = file(
        "[[api.tokens]]\nname = \"ops\"\nrole = \"root\"\nhash = \"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n",
    );
    let msg = Loader::new().file(&path).load().unwrap_err().to_string();
    assert!(msg.contains("root") && msg.contains("role"), "{msg}");
}

#[test]
fn explicit_file_must_exist_default_one_need_not() {
    let e = Loader::new()
        .file("/nonexistent/metald.toml")
        .load()
        .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/metald.toml"));
    let c = Loader::new()
        .optional_file("/nonexistent/metald.toml")
        .load()
        .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn workloads_parse_with_defaults() {
    let c = Config::from_toml_str(
        "[[workloads]]\nname = \"cam\"\ncommand = \"/usr/bin/cam\"\nargs = [\"-v\"]\nrestart = \"always\"\n",
    )
    .unwrap();
    let w = &c.workloads[0];
    assert_eq!(w.restart, RestartPolicy::Always);
    assert_eq!(w.throttle, ThrottleMode::Pause);
    assert_eq!(w.backoff, Backoff::default());
    assert_eq!(w.stop_timeout, Duration::from_secs(10));
    assert!(
        Config::from_toml_str(
            "[[workloads]]\nname = \"x\"\ncommand = \"y\"\nrestart = \"sometimes\"\n"
        )
        .is_err()
    );
}

#[test]
fn the_packaged_sample_config_is_valid_and_documents_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/metald.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Config::from_toml_str(&text).unwrap();
    // Every key, commented out, must also parse when uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("#:").map(str::trim_start).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml_str(&uncommented).unwrap();
    assert_eq!(c.workloads.len(), 1);
    assert_eq!(c.api.tokens.len(), 1);
    assert!(c.fleet.enabled() && c.device.labels.contains_key("role"));
    for section in [
        "[device]",
        "[api]",
        "[[api.tokens]]",
        "[hal]",
        "[board]",
        "[sampling]",
        "[data]",
        "[shutdown]",
        "[[workloads]]",
        "[log]",
        "[fleet]",
        "[fleet.backoff]",
    ] {
        assert!(text.contains(section), "{section} not documented");
    }
}
