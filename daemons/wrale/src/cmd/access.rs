//! `wrale alert|enroll|user|token|audit`.

use std::collections::BTreeMap;

use wrale_client::models::{
    AlertFilter, AuditFilter, FleetAlert, GroupId, NewEnrollmentToken, NewToken, NewUser,
};

use super::Ctx;
use super::login::{ask_secret, read_stdin_line};
use crate::args::{AlertCmd, AuditArgs, EnrollCmd, TokenCmd, UserCmd};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

fn done(ctx: &Ctx, what: &str, value: serde_json::Value) -> CliResult {
    if ctx.json {
        output::print(&output::json(&value)?);
    } else {
        eprintln!("{what}");
    }
    Ok(())
}

pub(crate) fn alert_table(alerts: &[FleetAlert]) -> String {
    let mut t = Table::new(&[
        "ID", "DEVICE", "SEVERITY", "STATE", "CODE", "RAISED", "MESSAGE",
    ]);
    for a in alerts {
        t.row(vec![
            a.id.to_string(),
            output::opt(a.device.as_ref()),
            a.severity.to_string(),
            a.state.to_string(),
            a.code.clone(),
            output::time(a.raised_at),
            a.message.clone(),
        ]);
    }
    t.render("No alerts.")
}

pub(crate) async fn alert(ctx: &Ctx, cmd: AlertCmd) -> CliResult {
    match cmd {
        AlertCmd::List {
            state,
            device,
            severity,
        } => {
            let alerts = ctx
                .client
                .list_all_alerts(&AlertFilter {
                    state,
                    device,
                    severity,
                    ..Default::default()
                })
                .await?;
            if ctx.json {
                output::print(&output::json(&alerts)?);
            } else {
                output::print(&alert_table(&alerts));
            }
            Ok(())
        }
        AlertCmd::Ack { id } => {
            let a = ctx.client.ack_alert(id).await?;
            done(
                ctx,
                &format!("Acknowledged alert {id}."),
                serde_json::to_value(a).unwrap_or_default(),
            )
        }
        AlertCmd::Fleet | AlertCmd::Silence(_) | AlertCmd::DeadLetters { .. } => {
            super::analysis::alert(ctx, cmd).await
        }
        AlertCmd::Clear { id } => {
            let a = ctx.client.clear_alert(id).await?;
            done(
                ctx,
                &format!("Cleared alert {id}."),
                serde_json::to_value(a).unwrap_or_default(),
            )
        }
    }
}

pub(crate) async fn enroll(ctx: &Ctx, cmd: EnrollCmd) -> CliResult {
    match cmd {
        EnrollCmd::Create {
            group,
            uses,
            expires_in,
            labels,
        } => {
            let group = group
                .map(GroupId::new)
                .transpose()
                .map_err(|e| CliError::usage(e.to_string()))?;
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            let req = NewEnrollmentToken {
                group,
                uses,
                expires_in,
                labels: if labels.is_empty() {
                    None
                } else {
                    Some(labels)
                },
            };
            let created = ctx.client.create_enrollment_token(&req).await?;
            if ctx.json {
                output::print(&output::json(&created)?);
            } else {
                // The secret alone on stdout (for `$(wrale enroll create)`), details on stderr.
                output::print(&format!("{}\n", created.token));
                eprintln!(
                    "Enrollment token {} ({} use(s){}, expires {}); put it in metald's [fleet] enrollment_token. It is not shown again.",
                    created.info.id,
                    created.info.uses,
                    created
                        .info
                        .group
                        .as_ref()
                        .map(|g| format!(", group {g}"))
                        .unwrap_or_default(),
                    output::time(created.info.expires_at),
                );
            }
            Ok(())
        }
        EnrollCmd::List => {
            let tokens = ctx.client.list_enrollment_tokens().await?;
            if ctx.json {
                output::print(&output::json(&tokens)?);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "GROUP", "USED", "EXPIRES", "LABELS"]);
            for e in &tokens {
                t.row(vec![
                    e.id.clone(),
                    output::opt(e.group.as_ref()),
                    format!("{}/{}", e.used, e.uses),
                    output::time(e.expires_at),
                    output::labels(&e.labels),
                ]);
            }
            output::print(&t.render("No enrollment tokens."));
            Ok(())
        }
        EnrollCmd::Delete { id } => {
            ctx.client.delete_enrollment_token(&id).await?;
            done(
                ctx,
                &format!("Deleted enrollment token {id}."),
                serde_json::json!({ "deleted": id }),
            )
        }
    }
}

pub(crate) async fn user(ctx: &Ctx, cmd: UserCmd) -> CliResult {
    match cmd {
        UserCmd::List => {
            let users = ctx.client.list_users().await?;
            if ctx.json {
                output::print(&output::json(&users)?);
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "ROLE", "CREATED"]);
            for u in &users {
                t.row(vec![
                    u.name.clone(),
                    u.role.to_string(),
                    output::time(u.created_at),
                ]);
            }
            output::print(&t.render("No users."));
            Ok(())
        }
        UserCmd::Create {
            name,
            role,
            password_stdin,
        } => {
            let password = if password_stdin {
                read_stdin_line()?
            } else {
                let p = ask_secret(&format!("Password for new user {name}: "))?;
                let again = ask_secret("Again: ")?;
                if p != again {
                    return Err(CliError::usage("the passwords differ"));
                }
                p
            };
            let u = ctx
                .client
                .create_user(&NewUser {
                    name,
                    password,
                    role,
                })
                .await?;
            done(
                ctx,
                &format!("Created user {} ({}).", u.name, u.role),
                serde_json::to_value(&u).unwrap_or_default(),
            )
        }
        UserCmd::Delete { name } => {
            ctx.client.delete_user(&name).await?;
            done(
                ctx,
                &format!("Deleted user {name}."),
                serde_json::json!({ "deleted": name }),
            )
        }
    }
}

pub(crate) async fn token(ctx: &Ctx, cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::List => {
            let tokens = ctx.client.list_tokens().await?;
            if ctx.json {
                output::print(&output::json(&tokens)?);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "ROLE", "OWNER", "CREATED", "EXPIRES"]);
            for k in &tokens {
                t.row(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.role.to_string(),
                    k.owner.clone(),
                    output::time(k.created_at),
                    output::opt_time(k.expires_at),
                ]);
            }
            output::print(&t.render("No API tokens."));
            Ok(())
        }
        TokenCmd::Create {
            name,
            role,
            expires_in,
        } => {
            let created = ctx
                .client
                .create_token(&NewToken {
                    name,
                    role,
                    expires_in,
                })
                .await?;
            if ctx.json {
                output::print(&output::json(&created)?);
            } else {
                output::print(&format!("{}\n", created.token));
                eprintln!(
                    "API token {} \"{}\" ({}{}); use it with --token or WRALE_TOKEN. It is not shown again.",
                    created.info.id,
                    created.info.name,
                    created.info.role,
                    created
                        .info
                        .expires_at
                        .map(|t| format!(", expires {}", output::time(t)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        TokenCmd::Revoke { id } => {
            ctx.client.revoke_token(&id).await?;
            done(
                ctx,
                &format!("Revoked API token {id}."),
                serde_json::json!({ "revoked": id }),
            )
        }
    }
}

pub(crate) async fn audit(ctx: &Ctx, a: AuditArgs) -> CliResult {
    let filter = AuditFilter {
        actor: a.actor,
        target: a.target,
        action: a.action,
        since: a.since,
        until: a.until,
        limit: a.limit,
        before: None,
    };
    let entries = if a.limit.is_some() {
        ctx.client.audit(&filter).await?.items
    } else {
        ctx.client.audit_all(&filter).await?
    };
    if ctx.json {
        output::print(&output::json(&entries)?);
        return Ok(());
    }
    let mut t = Table::new(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "VERDICT"]);
    for e in &entries {
        t.row(vec![
            e.seq.to_string(),
            output::time(e.time),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.verdict.clone(),
        ]);
    }
    output::print(&t.render("No audit entries."));
    Ok(())
}
