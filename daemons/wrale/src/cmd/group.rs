//! `wrale group ...`.

use wrale_client::models::{Group, GroupId, NewGroup};

use super::Ctx;
use crate::args::GroupCmd;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

fn group_id(s: &str) -> CliResult<GroupId> {
    GroupId::new(s).map_err(|e| CliError::usage(e.to_string()))
}

pub(crate) fn group_table(groups: &[Group]) -> String {
    let mut t = Table::new(&["ID", "NAME", "PARENT"]);
    for g in groups {
        t.row(vec![
            g.id.to_string(),
            g.name.clone(),
            output::opt(g.parent.as_ref()),
        ]);
    }
    t.render("No groups.")
}

fn group_block(g: &Group) -> String {
    output::key_values(&[
        ("id", g.id.to_string()),
        ("name", g.name.clone()),
        ("parent", output::opt(g.parent.as_ref())),
    ])
}

pub(crate) async fn run(ctx: &Ctx, cmd: GroupCmd) -> CliResult {
    match cmd {
        GroupCmd::List => {
            let groups = ctx.client.list_groups().await?;
            if ctx.json {
                output::print(&output::json(&groups)?);
            } else {
                output::print(&group_table(&groups));
            }
        }
        GroupCmd::Create { id, name, parent } => {
            let new = NewGroup {
                id: group_id(&id)?,
                name,
                parent: parent.as_deref().map(group_id).transpose()?,
            };
            let g = ctx.client.create_group(&new).await?;
            if ctx.json {
                output::print(&output::json(&g)?);
            } else {
                output::print(&group_block(&g));
            }
        }
        GroupCmd::Show { id } => {
            let g = ctx.client.get_group(&id).await?;
            if ctx.json {
                output::print(&output::json(&g)?);
            } else {
                output::print(&group_block(&g));
            }
        }
        GroupCmd::Delete { id } => {
            ctx.client.delete_group(&id).await?;
            if ctx.json {
                output::print(&output::json(&serde_json::json!({ "deleted": id }))?);
            } else {
                eprintln!("Deleted group {id}.");
            }
        }
    }
    Ok(())
}
