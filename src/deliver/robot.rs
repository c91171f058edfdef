//! Group robots (群机器人, `webhook/send`): the webhook key is the credential; a robot posts
//! to its chat and may @-mention people; 20 messages a minute per robot.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{MethodUrl, SendReceipt, WeComApi};
use super::target::{
    dry_run_call, rate_limits, Audience, Budget, CallFailure, CallLimit, Parts, Request, Target,
};
use crate::config::{Mentions, MsgType, RobotConfig, TargetKind};
use crate::render::{ContentLimits, MessageContent};
use crate::state::Charge;

/// Robot contents: markdown and markdown_v2 take twice an app's (docs/wecom-api.md#group-robots).
const LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 4096,
    markdown_v2: 4096,
};

pub struct RobotTarget {
    robot: RobotConfig,
    api: WeComApi,
    send_url: MethodUrl,
    budget: Budget,
}

impl RobotTarget {
    pub fn new(robot: &RobotConfig, parts: &Parts<'_>) -> RobotTarget {
        let mut robot = robot.clone();
        if parts.dry_run {
            robot.key = None;
        }
        RobotTarget {
            send_url: MethodUrl::new(&robot.api_url, "webhook/send"),
            api: parts.clients.api.clone(),
            budget: Budget {
                scope: format!("robot:{}", robot.name),
                limits: rate_limits(robot.rate_limit, parts.settings),
            },
            robot,
        }
    }
}

#[async_trait]
impl Target for RobotTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Robot
    }

    fn name(&self) -> &str {
        &self.robot.name
    }

    fn is_dry_run(&self) -> bool {
        self.robot.key.is_none()
    }

    fn limits(&self) -> &'static ContentLimits {
        &LIMITS
    }

    fn budget(&self) -> &Budget {
        &self.budget
    }

    fn requests(&self, part: &MessageContent, audience: Audience<'_>) -> Vec<Request> {
        vec![Request {
            body: robot_body(part, audience.mentions),
            charge: Charge::one_key(&self.robot.name),
            identity: audience.mentions.users.join(","),
        }]
    }

    fn over_budget(&self, _over: &[String]) -> String {
        format!(
            "robot {} already sent its limit of {} messages a minute; held back for Alertmanager to retry",
            self.robot.name, self.budget.limits.per_minute
        )
    }

    async fn call(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        let Some(key) = &self.robot.key else {
            return Err(dry_run_call(&self.robot.name));
        };
        self.api
            .send_robot(&self.send_url, key, body, limit.timeout())
            .await
            .map(|()| SendReceipt::default())
            .map_err(|error| CallFailure::from_wecom(error, None))
    }
}

/// A `webhook/send` body. Text messages carry mentions as lists; markdown mentions are
/// `<@userid>` in the content (the template puts them there); markdown_v2 has none.
fn robot_body(part: &MessageContent, mentions: &Mentions) -> Value {
    let msgtype = part.msgtype().as_str();
    let mut content = part.body();
    if part.msgtype() == MsgType::Text {
        if !mentions.users.is_empty() {
            content["mentioned_list"] = json!(mentions.users);
        }
        if !mentions.mobiles.is_empty() {
            content["mentioned_mobile_list"] = json!(mentions.mobiles);
        }
    }
    json!({ "msgtype": msgtype, msgtype: content })
}
