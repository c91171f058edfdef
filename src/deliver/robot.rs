//! Sending through a group robot (群机器人): a webhook whose key is the credential.

use std::time::{Duration, Instant};

use log::info;
use serde_json::Value;

use super::api::{MethodUrl, WeComApi};
use super::retry::Retry;
use super::sender::{SendFailure, Sent};
use crate::config::RobotConfig;

pub struct RobotSender {
    robot: RobotConfig,
    api: WeComApi,
    send_url: MethodUrl,
    call_timeout: Duration,
}

impl RobotSender {
    pub fn new(robot: RobotConfig, api: WeComApi, call_timeout: Duration) -> RobotSender {
        RobotSender {
            send_url: MethodUrl::new(&robot.api_url, "webhook/send"),
            robot,
            api,
            call_timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.robot.name
    }

    pub fn is_dry_run(&self) -> bool {
        self.robot.key.is_none()
    }

    /// Posts `body` to the robot, retrying transient failures before `deadline`.
    pub async fn send(&self, body: &Value, deadline: Instant) -> Result<Sent, SendFailure> {
        let Some(key) = &self.robot.key else {
            info!("dry-run: robot {} would send: {body}", self.robot.name);
            return Ok(Sent::DryRun);
        };
        let mut retry = Retry::new(deadline);
        loop {
            let attempt = retry.attempt();
            let timeout = retry.call_timeout(self.call_timeout);
            let failure = match self.api.send_robot(&self.send_url, key, body, timeout).await {
                Ok(()) => return Ok(Sent::Accepted(Default::default())),
                Err(error) => match SendFailure::from_wecom(error) {
                    permanent @ SendFailure::Permanent { .. } => return Err(permanent),
                    transient => transient,
                },
            };
            if !retry
                .back_off(&format!("robot {}", self.robot.name), attempt, &failure)
                .await
            {
                return Err(failure);
            }
        }
    }
}
