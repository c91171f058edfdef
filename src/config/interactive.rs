//! Validation of what interactive cards need: an app's `callback:` (the token and
//! EncodingAESKey WeCom signs and encrypts clicks with), a route's `buttons:` and the
//! `alertmanager:` API that silence buttons call (docs/interactive-cards.md).

use std::time::Duration;

use super::file::{AlertmanagerSection, ButtonsSection, CallbackSection};
use super::secrets::{SecretKind, Secrets};
use super::{clean_ids, normalize_api_url, validate_basic_auth, Problem};
use crate::secret::Secret;

/// WeCom's buttons per `button_interaction` card (模板卡片消息, button_list: 不超过6).
pub const MAX_BUTTONS: usize = 6;
/// Default freshness window of a callback's `timestamp`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Default timeout of one Alertmanager API call: a click is answered at once, the card
/// updated when the silence exists, so a few seconds are affordable.
const DEFAULT_ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest and longest silence a button may create.
const SHORTEST_SILENCE: Duration = Duration::from_secs(60);
const LONGEST_SILENCE: Duration = Duration::from_secs(30 * 86_400);

/// An app's callback settings: what WeCom's admin console shows under "API接收".
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    pub token: Secret,
    /// 43 characters of base64: the AES key without its `=`.
    pub encoding_aes_key: Secret,
    /// Callbacks whose timestamp is further than this from our clock are refused.
    pub max_age: Duration,
}

/// A route's buttons on firing cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonSettings {
    pub acknowledge: bool,
    /// One silence button per duration, in the order written.
    pub silence: Vec<Duration>,
    /// Userids that may click; empty: the card's recipients.
    pub allowed_users: Vec<String>,
}

/// How to reach Alertmanager's API v2.
#[derive(Debug, Clone)]
pub struct AlertmanagerSettings {
    /// `None`: each card's `externalURL`.
    pub url: Option<String>,
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<(String, Secret)>,
    pub timeout: Duration,
}

type Invalid = (String, String);

/// Validates `apps[i].callback`; `prefix` is its key.
pub fn validate_callback(
    raw: CallbackSection,
    prefix: &str,
    secrets: &Secrets,
) -> Result<CallbackSettings, Problem> {
    let key = |field: &str| format!("{prefix}.{field}");
    let token = secrets
        .read(
            prefix,
            "token",
            raw.token,
            raw.token_file,
            SecretKind::CallbackToken,
        )?
        .ok_or_else(|| {
            (
                key("token"),
                "is required: the Token WeCom's admin console shows for the app's callback URL".to_string(),
            )
        })?;
    if !token.expose().chars().all(|c| c.is_ascii_alphanumeric()) || token.expose().len() > 32 {
        return Err((
            key("token"),
            "must be the console's Token: at most 32 letters and digits".to_string(),
        )
            .into());
    }
    let encoding_aes_key = secrets
        .read(
            prefix,
            "encoding_aes_key",
            raw.encoding_aes_key,
            raw.encoding_aes_key_file,
            SecretKind::EncodingAesKey,
        )?
        .ok_or_else(|| {
            (
                key("encoding_aes_key"),
                "is required: the EncodingAESKey WeCom's admin console shows for the app's callback URL"
                    .to_string(),
            )
        })?;
    let aes = encoding_aes_key.expose();
    if aes.len() != 43
        || !aes
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    {
        return Err((
            key("encoding_aes_key"),
            "must be the console's EncodingAESKey: 43 characters of letters and digits".to_string(),
        )
            .into());
    }
    let max_age = raw.max_age.unwrap_or(DEFAULT_MAX_AGE);
    if max_age < Duration::from_secs(10) || max_age > Duration::from_secs(3600) {
        return Err((
            key("max_age"),
            "must be between 10s and 1h (WeCom retries a click for about 15 s)".to_string(),
        )
            .into());
    }
    Ok(CallbackSettings {
        token,
        encoding_aes_key,
        max_age,
    })
}

/// Validates `routes[i].buttons`.
pub fn validate_buttons(
    raw: ButtonsSection,
    key: &dyn Fn(&str) -> String,
) -> Result<ButtonSettings, Invalid> {
    let silence: Vec<Duration> = raw.silence.into_iter().map(|d| *d).collect();
    let count = silence.len() + usize::from(raw.acknowledge);
    if count == 0 {
        return Err((
            key("silence"),
            "no buttons: keep `acknowledge: true` or give at least one silence duration".into(),
        ));
    }
    if count > MAX_BUTTONS {
        return Err((
            key("silence"),
            format!("WeCom shows at most {MAX_BUTTONS} buttons on a card; this asks for {count}"),
        ));
    }
    for (j, duration) in silence.iter().enumerate() {
        if *duration < SHORTEST_SILENCE || *duration > LONGEST_SILENCE {
            return Err((key(&format!("silence[{j}]")), "must be between 1m and 30d".into()));
        }
        if silence[..j].contains(duration) {
            return Err((key(&format!("silence[{j}]")), "is given twice".into()));
        }
    }
    Ok(ButtonSettings {
        acknowledge: raw.acknowledge,
        silence,
        allowed_users: clean_ids(raw.allowed_users),
    })
}

/// Validates `alertmanager:`.
pub fn validate_alertmanager(
    raw: AlertmanagerSection,
    secrets: &Secrets,
) -> Result<AlertmanagerSettings, Problem> {
    let key = |field: &str| format!("alertmanager.{field}");
    let url = raw
        .url
        .map(|url| normalize_api_url(&url).map_err(|m| (key("url"), m)))
        .transpose()?;
    let bearer_token = secrets.read(
        "alertmanager",
        "bearer_token",
        raw.bearer_token,
        raw.bearer_token_file,
        SecretKind::Opaque,
    )?;
    let basic_auth = raw
        .basic_auth
        .map(|basic| validate_basic_auth(basic, "alertmanager.basic_auth", secrets))
        .transpose()?;
    if bearer_token.is_some() && basic_auth.is_some() {
        return Err((
            key("basic_auth"),
            "set either bearer_token or basic_auth, not both".to_string(),
        )
            .into());
    }
    if url.is_none() && (bearer_token.is_some() || basic_auth.is_some()) {
        return Err((
            key("url"),
            "is required with credentials: they are only ever sent to the URL configured here, never to the externalURL a webhook names".to_string(),
        )
            .into());
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_ALERTMANAGER_TIMEOUT);
    if timeout.is_zero() {
        return Err((key("timeout"), "must be more than 0s".to_string()).into());
    }
    Ok(AlertmanagerSettings {
        url,
        bearer_token,
        basic_auth,
        timeout,
    })
}
