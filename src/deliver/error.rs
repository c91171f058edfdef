//! Failures talking to WeCom, each classified the way the delivery logic and the answer to
//! Alertmanager need: retry now, refresh the token, or give up.

use std::fmt;

/// Which WeCom endpoint a call went to (a metric label, so a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    GetToken,
    MessageSend,
    /// Updates a sent interactive card with a `response_code`.
    UpdateTemplateCard,
    /// A group robot's webhook.
    RobotSend,
    /// App group chats.
    AppchatSend,
    AppchatCreate,
    AppchatGet,
    /// Directory reads: a department's own members, a department's sub-departments, a
    /// tag's users and departments.
    UserSimpleList,
    DepartmentSimpleList,
    TagGet,
}

impl Endpoint {
    pub const ALL: [Endpoint; 10] = [
        Endpoint::GetToken,
        Endpoint::MessageSend,
        Endpoint::UpdateTemplateCard,
        Endpoint::RobotSend,
        Endpoint::AppchatSend,
        Endpoint::AppchatCreate,
        Endpoint::AppchatGet,
        Endpoint::UserSimpleList,
        Endpoint::DepartmentSimpleList,
        Endpoint::TagGet,
    ];

    /// The method's path below the API base URL, and its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetToken => "gettoken",
            Endpoint::MessageSend => "message/send",
            Endpoint::UpdateTemplateCard => "message/update_template_card",
            Endpoint::RobotSend => "webhook/send",
            Endpoint::AppchatSend => "appchat/send",
            Endpoint::AppchatCreate => "appchat/create",
            Endpoint::AppchatGet => "appchat/get",
            Endpoint::UserSimpleList => "user/simplelist",
            Endpoint::DepartmentSimpleList => "department/simplelist",
            Endpoint::TagGet => "tag/get",
        }
    }

    /// Whether the caller needs the whole reply, not only its verdict.
    pub fn answers_whole(self) -> bool {
        matches!(
            self,
            Endpoint::AppchatCreate
                | Endpoint::AppchatGet
                | Endpoint::UserSimpleList
                | Endpoint::DepartmentSimpleList
                | Endpoint::TagGet
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The access token is invalid or expired: drop it, fetch a new one, retry once.
    TokenRejected,
    /// The app's credentials or network position are wrong; only an operator can fix it.
    Credentials,
    /// Worth retrying after a pause: WeCom busy, rate limited, network trouble.
    Transient,
    /// The message itself was refused; sending it again gets the same answer.
    Permanent,
}

/// One failed call to WeCom. Never holds a URL (the token travels in the query string).
#[derive(Debug, thiserror::Error)]
pub enum WeComError {
    #[error("{endpoint}: {detail}")]
    Transport { endpoint: Endpoint, detail: String },
    #[error("{endpoint}: HTTP status {status}")]
    HttpStatus { endpoint: Endpoint, status: u16 },
    #[error("{endpoint}: unreadable reply: {detail}")]
    BadReply { endpoint: Endpoint, detail: String },
    #[error("{endpoint}: errcode {errcode} ({}): {errmsg}", errcode_meaning(*errcode))]
    Api {
        endpoint: Endpoint,
        errcode: i64,
        errmsg: String,
    },
}

impl WeComError {
    /// Wraps a reqwest error, dropping the URL it carries.
    pub fn transport(endpoint: Endpoint, error: reqwest::Error) -> WeComError {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let error = error.without_url();
        let mut detail = format!("{kind}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        WeComError::Transport { endpoint, detail }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            WeComError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            WeComError::Transport { .. } | WeComError::BadReply { .. } => ErrorClass::Transient,
            WeComError::HttpStatus { status, .. } if *status >= 500 || *status == 429 => {
                ErrorClass::Transient
            }
            // A proxy or gateway answering 4xx: not WeCom's verdict on the message.
            WeComError::HttpStatus { .. } => ErrorClass::Transient,
            WeComError::Api { errcode, .. } => classify_errcode(*errcode),
        }
    }

    /// A short, fixed reason for metrics and the answer to Alertmanager.
    pub fn reason(&self) -> &'static str {
        match self {
            WeComError::Transport { .. } => "transport",
            WeComError::HttpStatus { .. } => "http_status",
            WeComError::BadReply { .. } => "bad_reply",
            WeComError::Api { errcode, .. } => match classify_errcode(*errcode) {
                ErrorClass::TokenRejected => "token_rejected",
                ErrorClass::Credentials => "credentials",
                ErrorClass::Transient if matches!(errcode, 45009 | 45033) => "rate_limited",
                ErrorClass::Transient => "wecom_busy",
                ErrorClass::Permanent => "rejected",
            },
        }
    }

    /// The value of the `errcode` label on API call metrics.
    pub fn errcode_label(&self) -> &'static str {
        match self {
            WeComError::Transport { .. } => "transport_error",
            WeComError::HttpStatus { .. } => "http_error",
            WeComError::BadReply { .. } => "bad_reply",
            WeComError::Api { errcode, .. } => errcode_label(*errcode),
        }
    }
}

/// Classifies an errcode from a WeCom reply (docs/wecom-api.md#errcodes): anything not
/// known to be worth retrying is permanent.
pub fn classify_errcode(errcode: i64) -> ErrorClass {
    match errcode {
        40014 | 42001 | 41001 => ErrorClass::TokenRejected,
        40001 | 40013 | 40091 | 60020 | 48002 | 41002 | 41004 => ErrorClass::Credentials,
        -1 | 45009 | 45033 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Label values of failures that are not a WeCom errcode.
const NON_ERRCODE_LABELS: [&str; 4] = ["other", "transport_error", "http_error", "bad_reply"];

/// Every value the `errcode` label of API call metrics takes.
pub fn errcode_labels() -> impl Iterator<Item = &'static str> {
    KNOWN_ERRCODES
        .iter()
        .map(|(_, label)| *label)
        .chain(NON_ERRCODE_LABELS)
}

/// Errcodes that get their own metric label value; the rest are "other".
const KNOWN_ERRCODES: &[(i64, &str)] = &[
    (0, "0"),
    (-1, "-1"),
    (40001, "40001"),
    (40008, "40008"),
    (40013, "40013"),
    (40014, "40014"),
    (40032, "40032"),
    (40056, "40056"),
    (40058, "40058"),
    (40068, "40068"),
    (40050, "40050"),
    (40091, "40091"),
    (40094, "40094"),
    (41001, "41001"),
    (41002, "41002"),
    (41004, "41004"),
    (41011, "41011"),
    (41017, "41017"),
    (42001, "42001"),
    (44004, "44004"),
    (45002, "45002"),
    (45009, "45009"),
    (45033, "45033"),
    (45034, "45034"),
    (43012, "43012"),
    (42014, "42014"),
    (60140, "60140"),
    (48002, "48002"),
    (60003, "60003"),
    (60011, "60011"),
    (60020, "60020"),
    (60123, "60123"),
    (81013, "81013"),
    (82001, "82001"),
    (82002, "82002"),
    (82003, "82003"),
    (86001, "86001"),
    (86003, "86003"),
    (86004, "86004"),
    (86005, "86005"),
    (86006, "86006"),
    (86007, "86007"),
    (86008, "86008"),
    (86207, "86207"),
    (86215, "86215"),
    (86216, "86216"),
    (93000, "93000"),
    (93004, "93004"),
    (301002, "301002"),
];

pub fn errcode_label(errcode: i64) -> &'static str {
    KNOWN_ERRCODES
        .iter()
        .find(|(known, _)| *known == errcode)
        .map(|(_, label)| *label)
        .unwrap_or("other")
}

/// What an errcode means, for operators reading logs without the WeCom docs at hand.
pub fn errcode_meaning(errcode: i64) -> &'static str {
    match errcode {
        -1 => "WeCom system busy",
        40001 => "invalid secret, secret does not belong to this corp, or the app is disabled",
        40008 => "invalid msgtype",
        40013 => "invalid corp_id",
        40014 => "access token invalid",
        40032 => "more than 1000 users",
        40056 => "invalid agent_id",
        40050 => "the chat does not exist (create it first: alertmanager-wecom appchat create)",
        40058 => "invalid parameter (markdown content too long?)",
        40068 => "invalid tag id: no such tag",
        40091 => "secret invalid",
        40094 => "invalid url",
        41001 => "access token missing",
        41002 => "corp_id missing",
        41004 => "secret missing",
        41011 => "agent_id missing",
        41017 => "tag id missing",
        42001 => "access token expired",
        44004 => "empty content",
        45002 => "content too long",
        45009 => "API frequency limit reached",
        45033 => "API concurrency limit reached",
        45034 => "url must be http or https",
        43012 => "the app has no callback URL: cards with buttons need one (docs/interactive-cards.md)",
        42014 => "invalid or already used task_id",
        42015 => "the card was sent by another app",
        60140 => "invalid response_code: already used, or older than 72 hours",
        48002 => "API not allowed for this secret (app group chats need an app whose visible range is the root department)",
        60011 => "a member, party or tag is outside the app's visible range (for directory reads: the app may not read this part of the directory)",
        60003 => "the department does not exist",
        60020 => "caller IP is not in the app's trusted IPs (configure a fixed egress IP in the WeCom admin console)",
        60123 => "invalid department id: no such department",
        81013 => "every user, party and tag is invalid or outside the app's visible range",
        82001 => "no recipients",
        82002 => "more than 100 parties",
        82003 => "more than 100 tags",
        86001 => "invalid chat id, or a chat WeCom does not know",
        86003 => "the chat does not exist",
        86004 => "invalid chat name",
        86005 => "invalid chat owner",
        86006 => "a chat needs 2 to 2000 members",
        86007 => "invalid chat member",
        86008 => "the chat was not created by this app",
        86201..=86204 => "chat id, name, owner or members missing",
        86207 => "the chat owner is not one of its members",
        86215 => "a chat with this chat id exists already",
        86216 => "a chat member is not in the directory",
        301002 => "access token belongs to another app than agent_id",
        93000 => "invalid robot webhook key, or the robot was removed from its chat",
        93004 => "the group robot is disabled",
        _ => "see WeCom's global error code list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(errcode: i64) -> WeComError {
        WeComError::Api {
            endpoint: Endpoint::MessageSend,
            errcode,
            errmsg: "x".into(),
        }
    }

    #[test]
    fn errcodes_are_classified_as_the_wecom_docs_say() {
        for code in [40014, 42001, 41001] {
            assert_eq!(api(code).class(), ErrorClass::TokenRejected, "{code}");
        }
        for code in [40001, 40013, 40091, 60020, 48002] {
            assert_eq!(api(code).class(), ErrorClass::Credentials, "{code}");
        }
        for code in [-1, 45009, 45033] {
            assert_eq!(api(code).class(), ErrorClass::Transient, "{code}");
        }
        for code in [
            81013, 82001, 40032, 40056, 41011, 301002, 40008, 44004, 45002, 40058, 45034, 40094,
        ] {
            assert_eq!(api(code).class(), ErrorClass::Permanent, "{code}");
        }
        let status = |status| WeComError::HttpStatus {
            endpoint: Endpoint::MessageSend,
            status,
        };
        assert_eq!(status(502).class(), ErrorClass::Transient);
        assert_eq!(api(45009).reason(), "rate_limited");
    }

    #[test]
    fn the_directory_reads_errcodes_are_permanent_named_and_labelled() {
        for code in [60011, 60003, 60123, 40068, 41017] {
            assert_eq!(api(code).class(), ErrorClass::Permanent, "{code}");
            assert_eq!(errcode_label(code), code.to_string(), "{code}");
            assert_ne!(
                errcode_meaning(code),
                errcode_meaning(123456),
                "{code} has a meaning of its own"
            );
        }
    }

    #[test]
    fn metric_labels_come_from_a_fixed_set() {
        assert_eq!(errcode_label(81013), "81013");
        assert_eq!(errcode_label(-1), "-1");
        assert_eq!(errcode_label(123456), "other");
    }
}
