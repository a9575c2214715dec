//! `wrale login`, `logout`, `whoami`, and reading secrets from the terminal.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};

use super::Ctx;
use crate::args::LoginArgs;
use crate::config as cfg;
use crate::error::{CliError, CliResult};
use crate::output;

pub(crate) async fn login(ctx: &Ctx, args: LoginArgs) -> CliResult {
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => {
            return Err(CliError::usage("--password-stdin needs --username"));
        }
        None => ask_line("Username: ")?,
    };
    let password = if args.password_stdin {
        read_stdin_line()?
    } else {
        ask_secret(&format!("Password for {username}: "))?
    };
    // A login never sends an old token along.
    ctx.client.set_token(None);
    let session = ctx.client.login(&username, &password).await?;
    let path = cfg::path(&ctx.global)?;
    let mut file = cfg::load(&path).unwrap_or_default();
    file.url = Some(ctx.client.base_url().trim_end_matches('/').to_owned());
    file.token = Some(session.token.clone());
    if let Some(ca) = &ctx.global.ca_cert {
        // Stored absolute, so later commands find it from any directory.
        file.ca_cert = Some(std::path::absolute(ca).unwrap_or_else(|_| ca.clone()));
    }
    cfg::save(&path, &file)?;
    if ctx.json {
        let v = serde_json::json!({
            "url": file.url,
            "user": session.user,
            "expires_at": session.expires_at,
            "config": path,
        });
        output::print(&output::json(&v)?);
    } else {
        eprintln!(
            "Logged in to {} as {} ({}); session stored in {} until {}.",
            ctx.client.base_url().trim_end_matches('/'),
            session.user.name,
            session.user.role,
            path.display(),
            output::time(session.expires_at)
        );
    }
    Ok(())
}

pub(crate) async fn logout(ctx: &Ctx) -> CliResult {
    let result = ctx.client.logout().await;
    // Forget the stored token even when the server already dropped the session.
    let path = cfg::path(&ctx.global)?;
    let mut file = cfg::load(&path)?;
    if file.token.is_some() {
        file.token = None;
        cfg::save(&path, &file)?;
    }
    match result {
        Ok(()) => {}
        Err(e) if e.code() == "unauthorized" => {}
        Err(e) => return Err(e.into()),
    }
    if !ctx.json {
        eprintln!("Logged out.");
    }
    Ok(())
}

pub(crate) async fn whoami(ctx: &Ctx) -> CliResult {
    let me = ctx.client.whoami().await?;
    if ctx.json {
        output::print(&output::json(&me)?);
    } else {
        output::print(&output::key_values(&[
            ("name", me.name.clone()),
            ("kind", me.kind.to_string()),
            ("role", output::opt(me.role)),
            ("url", ctx.client.base_url().to_owned()),
        ]));
    }
    Ok(())
}

/// The first line of standard input, without its line ending.
pub(crate) fn read_stdin_line() -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::failure("io", format!("cannot read standard input: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(CliError::usage("no password on standard input"));
    }
    Ok(line)
}

fn open_tty() -> CliResult<File> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| CliError::usage("no terminal to ask on; pass --username and --password-stdin"))
}

/// Asks for a line on the terminal (echoed).
fn ask_line(prompt: &str) -> CliResult<String> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no terminal to ask on; pass --username and --password-stdin",
        ));
    }
    let mut tty = open_tty()?;
    let _ = tty.write_all(prompt.as_bytes());
    let _ = tty.flush();
    let mut line = String::new();
    BufReader::new(tty)
        .read_line(&mut line)
        .map_err(|e| CliError::failure("io", format!("cannot read the terminal: {e}")))?;
    Ok(line.trim().to_owned())
}

/// Asks for a secret on the terminal with echo off (restored afterwards).
pub(crate) fn ask_secret(prompt: &str) -> CliResult<String> {
    let mut tty = open_tty()?;
    let saved = termios::tcgetattr(&tty)
        .map_err(|_| CliError::usage("no terminal to ask on; pass --password-stdin"))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let _ = tty.write_all(prompt.as_bytes());
    let _ = tty.flush();
    termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| CliError::failure("io", format!("cannot turn off echo: {e}")))?;
    let mut line = String::new();
    let read = BufReader::new(&tty).read_line(&mut line);
    let _ = termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &saved);
    read.map_err(|e| CliError::failure("io", format!("cannot read the terminal: {e}")))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(CliError::usage("empty password"));
    }
    Ok(secret)
}
