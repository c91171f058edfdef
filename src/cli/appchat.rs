//! `alertmanager-wecom appchat create|get`: app group chats exist only if an app created
//! them through WeCom's API, so the command line does it (with the app's credentials from
//! the configuration) and prints the `chat:` a route needs.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::load;
use crate::deliver::api::WeComApi;
use crate::deliver::appchat::{ChatAdmin, NewChat};
use crate::metrics::Metrics;

#[derive(Debug, Subcommand)]
pub enum AppchatCommand {
    /// Create a chat owned by an app (only apps whose visible range is the root department may).
    Create {
        /// The app (of `apps:`) that creates the chat and will post to it.
        #[arg(long, value_name = "NAME")]
        app: String,
        /// The chat's title, at most 50 characters.
        #[arg(long, value_name = "TITLE")]
        name: String,
        /// The owner's userid; must be one of --users.
        #[arg(long, value_name = "USER")]
        owner: String,
        /// Members' userids, comma-separated: 2 to 2000.
        #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true)]
        users: Vec<String>,
        /// Choose the chat id (1 to 32 letters and digits); WeCom makes one up otherwise.
        #[arg(long, value_name = "ID")]
        chatid: Option<String>,
    },
    /// Show a chat's name, owner and members.
    Get {
        #[arg(long, value_name = "NAME")]
        app: String,
        #[arg(long, value_name = "ID")]
        chatid: String,
    },
}

pub fn run(config: Option<&Path>, command: &AppchatCommand) -> ExitCode {
    let executor = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(executor) => executor,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match executor.block_on(execute(config, command)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(path: Option<&Path>, command: &AppchatCommand) -> Result<String, String> {
    let config = load(path)?;
    let app_name = match command {
        AppchatCommand::Create { app, .. } | AppchatCommand::Get { app, .. } => app,
    };
    let app = config.app(app_name).ok_or_else(|| {
        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        format!(
            "--app {app_name:?}: no such app in {} (apps: {})",
            config.source,
            names.join(", ")
        )
    })?;
    let admin = ChatAdmin::new(app, WeComApi::new(Metrics::new()), config.wecom.timeout)
        .map_err(|e| e.to_string())?;
    match command {
        AppchatCommand::Create {
            app,
            name,
            owner,
            users,
            chatid,
        } => {
            let chat = NewChat {
                name: name.clone(),
                owner: owner.clone(),
                users: users
                    .iter()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
                chat_id: chatid.clone(),
            };
            let chat_id = admin.create(&chat).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "created chat {chat_id}\n\n# a route posting to it:\n  - name: {chat_id}\n    app: {app}\n    chat: {chat_id}\n    msgtype: markdown\n"
            ))
        }
        AppchatCommand::Get { chatid, .. } => {
            let info = admin.get(chatid).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            ))
        }
    }
}
