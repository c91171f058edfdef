//! Structured inputs from libFuzzer's bytes. Strings are strung together from
//! [`TRICKY`](crate::TRICKY) fragments and arbitrary text, so that template syntax and
//! markup turn up in a few executions rather than after millions.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::{AlertSpec, NotificationSpec, RecipientLabels, TRICKY};

/// A string of tricky fragments and arbitrary text.
#[derive(Debug, Clone)]
pub struct Text(pub String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut text = String::new();
        for _ in 0..u.int_in_range(0..=6u8)? {
            if u.ratio(1, 2)? {
                text.push_str(u.choose(TRICKY)?);
            } else {
                text.push_str(<&str>::arbitrary(u)?);
            }
        }
        Ok(Text(text))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

/// A link: mostly http(s), sometimes anything, sometimes too long for WeCom.
#[derive(Debug, Clone)]
pub struct Link(pub String);

impl<'a> Arbitrary<'a> for Link {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let Text(tail) = Text::arbitrary(u)?;
        Ok(Link(match u.int_in_range(0..=5u8)? {
            0 => String::new(),
            1 => tail,
            2 => format!("https://prometheus.example/graph?g0.expr={tail}"),
            3 => format!("http://{}{tail}", "x".repeat(1100)),
            _ => format!("http://prometheus.example/{tail}"),
        }))
    }
}

#[derive(Debug, Arbitrary)]
struct FuzzAlert {
    firing: bool,
    alertname: Option<Text>,
    severity: Option<Text>,
    labels: Vec<(Text, Text)>,
    summary: Option<Text>,
    description: Option<Text>,
    runbook_url: Option<Link>,
    generator_url: Link,
    /// Copies of this alert (with an index label each), for groups too big for a message.
    copies: u8,
}

/// At most this many alerts: enough for a numbered series of three full messages.
const MAX_ALERTS: usize = 200;

impl<'a> Arbitrary<'a> for NotificationSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut alerts = Vec::new();
        for alert in u.arbitrary_iter::<FuzzAlert>()? {
            let alert = alert?;
            let spec = AlertSpec {
                firing: alert.firing,
                alertname: alert.alertname.map(String::from),
                severity: alert.severity.map(String::from),
                labels: alert.labels.into_iter().map(|(k, v)| (k.0, v.0)).collect(),
                summary: alert.summary.map(String::from),
                description: alert.description.map(String::from),
                runbook_url: alert.runbook_url.map(|l| l.0),
                generator_url: alert.generator_url.0,
            };
            for i in 0..=usize::from(alert.copies % 64) {
                let mut copy = spec.clone();
                if i > 0 {
                    copy.labels.push(("copy".into(), i.to_string()));
                }
                alerts.push(copy);
            }
            if alerts.len() >= MAX_ALERTS {
                alerts.truncate(MAX_ALERTS);
                break;
            }
        }
        Ok(NotificationSpec {
            alerts,
            external_url: Link::arbitrary(u)?.0,
            receiver: Text::arbitrary(u)?.0,
            mentions: Vec::<Text>::arbitrary(u)?.into_iter().map(String::from).collect(),
        })
    }
}

impl<'a> Arbitrary<'a> for RecipientLabels {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(RecipientLabels {
            owner: Text::arbitrary(u)?.0,
            backup: Text::arbitrary(u)?.0,
            party: Text::arbitrary(u)?.0,
            tag: Text::arbitrary(u)?.0,
        })
    }
}
