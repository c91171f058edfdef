//! The one place that turns configured apps, robots and chats into delivery targets: a new
//! kind of target is one arm here.

use std::collections::HashMap;
use std::sync::Arc;

use super::app::AppTarget;
use super::appchat::ChatTarget;
use super::robot::RobotTarget;
use super::target::{Parts, Target};
use crate::config::{self, Config};

/// The targets of a configuration, by name: one per app, robot and chat a route uses.
pub fn build_targets(config: &Config, parts: &Parts<'_>) -> HashMap<String, Arc<dyn Target>> {
    let mut targets: HashMap<String, Arc<dyn Target>> = HashMap::new();
    for app in &config.apps {
        targets.insert(app.name.clone(), Arc::new(AppTarget::new(app, parts)));
    }
    for robot in &config.robots {
        targets.insert(robot.name.clone(), Arc::new(RobotTarget::new(robot, parts)));
    }
    for route in &config.routes {
        if let config::Target::Chat { app, chat_id, name } = &route.target {
            let Some(app) = config.apps.iter().find(|a| &a.name == app) else {
                continue; // validation guarantees the app exists
            };
            targets
                .entry(name.clone())
                .or_insert_with(|| Arc::new(ChatTarget::new(app, chat_id, name, parts)));
        }
    }
    targets
}
