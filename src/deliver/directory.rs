//! The directory as an app's rate budget needs it: which members a party or tag reaches,
//! read from WeCom (`directory: true` on the app) so messages to parties and tags are
//! counted per member like WeCom counts them. Lookups never wait on WeCom: they answer
//! from what was read, and what is missing or stale is fetched in the background.
//!
//! How a group is read (docs/wecom-api.md#directory):
//! - a party: `department/simplelist?id=` gives the department and every department below
//!   it; `user/simplelist?department_id=` gives each one's own members (the current page
//!   has no `fetch_child`), and the party's members are their union;
//! - a tag: `tag/get?tagid=` gives its users and its parties; its members are the users and
//!   the parties' members, read as above.
//!
//! What is read is kept per group and read again [`DEFAULT_REFRESH`] (or the configured
//! interval) later; until the new read lands, the old answer is used. Reads are one at a
//! time per app, so a burst of new groups is a queue, not a burst of WeCom calls.
//!
//! When WeCom answers that a group cannot be read (60011: the app may not read that part
//! of the directory) or does not exist (60003 / 60123 departments, 40068 / 41017 tags),
//! the group is unknown (`None`: the caller counts it as one member) until the next read a
//! refresh interval later. Any other failure (network, WeCom busy, a rejected token twice
//! in a row) keeps the last answer and is retried after [`FAILURE_BACKOFF`] (or the refresh
//! interval, if shorter). Each group logs one warning per kind of failure, not one per
//! lookup or per retry, and one line when it is read again.
//!
//! Memory is bounded: a group reaching more than [`MAX_MEMBERS`] members (or walking more
//! than [`MAX_DEPARTMENTS`] departments) is not kept; it is counted as one member. That
//! under-counts the members of a party that large, but booking ten thousand budget keys per
//! message would cost more than it protects, and such a party is better split or addressed
//! through smaller ones. At most [`MAX_GROUPS`] groups and [`MAX_STORED_MEMBERS`] member
//! ids in all are kept per app; beyond them, groups idle for a refresh interval make room,
//! and otherwise new groups stay counted as one member.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Value;

use super::api::{CallLimit, MethodUrl, WeComApi};
use super::error::{Endpoint, ErrorClass, WeComError};
use super::token::AccessTokenCache;
use crate::config::AppConfig;
use crate::secret::Secret;

/// How long a group's members are used before they are read again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
/// After a failed read, the next one waits this long (or the refresh interval, if shorter).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// One directory call's timeout, unless [`Directory::with_call_timeout`] sets another.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// One group's whole read (all its calls) gives up after this long.
pub const READ_DEADLINE: Duration = Duration::from_secs(60);
/// A group reaching more members than this is counted as one member.
pub const MAX_MEMBERS: usize = 10_000;
/// A group whose read walks more departments than this is counted as one member.
pub const MAX_DEPARTMENTS: usize = 500;
/// Groups kept per app.
pub const MAX_GROUPS: usize = 1_000;
/// Member ids kept per app, over all its groups.
pub const MAX_STORED_MEMBERS: usize = 200_000;

/// A party (department, with its sub-parties) or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    Party(String),
    Tag(String),
}

impl Group {
    /// The group's own key in the budget, while its members are unknown.
    pub fn budget_key(&self) -> String {
        match self {
            Group::Party(id) => format!("party:{id}"),
            Group::Tag(id) => format!("tag:{id}"),
        }
    }
}

/// How a group names itself in logs.
fn describe(group: &Group) -> String {
    match group {
        Group::Party(id) => format!("party {id}"),
        Group::Tag(id) => format!("tag {id}"),
    }
}

/// One app's view of the directory.
pub struct Directory {
    /// `None` for an app in dry-run: nothing is read, every group is unknown.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    app: String,
    api: WeComApi,
    tokens: Arc<AccessTokenCache>,
    users_url: MethodUrl,
    departments_url: MethodUrl,
    tag_url: MethodUrl,
    refresh: Duration,
    backoff: Duration,
    call_timeout: Duration,
    groups: Mutex<Groups>,
    /// Held by the read in progress: one read at a time per app.
    reading: tokio::sync::Mutex<()>,
}

impl Directory {
    /// The directory of `app`, read through `api` with the app's token cache; `tokens`
    /// `None` (an app in dry-run) reads nothing. Groups are read again after `refresh`
    /// ([`DEFAULT_REFRESH`] unless configured otherwise).
    pub fn new(
        app: &AppConfig,
        api: WeComApi,
        tokens: Option<Arc<AccessTokenCache>>,
        refresh: Duration,
    ) -> Directory {
        let inner = tokens.map(|tokens| {
            let url = |endpoint: Endpoint| MethodUrl::new(&app.api_url, endpoint.as_str());
            Arc::new(Inner {
                app: app.name.clone(),
                api,
                tokens,
                users_url: url(Endpoint::UserSimpleList),
                departments_url: url(Endpoint::DepartmentSimpleList),
                tag_url: url(Endpoint::TagGet),
                refresh,
                backoff: FAILURE_BACKOFF.min(refresh),
                call_timeout: DEFAULT_CALL_TIMEOUT,
                groups: Mutex::new(Groups::default()),
                reading: tokio::sync::Mutex::new(()),
            })
        });
        Directory { inner }
    }

    /// Each directory call's timeout (`wecom.timeout`, typically).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Directory {
        if let Some(inner) = self.inner.as_mut().and_then(Arc::get_mut) {
            inner.call_timeout = timeout;
        }
        self
    }

    /// The group's members (lower-cased userids, deduplicated, sorted) as last read;
    /// `None` while unknown. Never waits on WeCom: a group never read, or read a refresh
    /// interval ago, is read in the background (one read per group at a time, and only
    /// inside a tokio runtime) while this answers what was read before.
    pub fn members(&self, group: &Group) -> Option<Arc<[String]>> {
        let inner = self.inner.as_ref()?;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let now = Instant::now();
        let lookup = inner.lock().lookup(group, now, inner.refresh, runtime.is_some());
        if lookup.full {
            warn!(
                "app {}: the directory holds {MAX_GROUPS} groups already, none of them idle; {} and other new groups are counted as one member each",
                inner.app,
                describe(group)
            );
        }
        if let (true, Some(runtime)) = (lookup.read, runtime) {
            let inner = inner.clone();
            let group = group.clone();
            runtime.spawn(async move { inner.read_and_keep(group).await });
        }
        lookup.members
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_and_keep(self: Arc<Self>, group: Group) {
        // Should the read be cancelled or panic, the group may be read again.
        let mut flag = ReadingFlag {
            inner: &self,
            group: &group,
            armed: true,
        };
        let read = {
            let _one_at_a_time = self.reading.lock().await;
            self.read(&group).await
        };
        let event = self
            .lock()
            .keep(&group, read, Instant::now(), self.refresh, self.backoff);
        // Kept (and the flag cleared): a read started since is not this one's to clear.
        flag.armed = false;
        self.log(&group, event);
    }

    fn log(&self, group: &Group, event: Event) {
        let app = &self.app;
        let group = describe(group);
        match event {
            Event::Quiet => {}
            Event::ReadAgain(members) => {
                info!("app {app}: read {group} from WeCom's directory again: {members} member(s)")
            }
            Event::Failed { kind, detail, kept } => {
                let counted = if kept {
                    "its members as last read are used meanwhile"
                } else {
                    "it is counted as one member meanwhile"
                };
                match kind {
                    Kind::Denied => warn!(
                        "app {app}: may not read {group} from WeCom's directory ({detail}); it stays counted as one member in the rate budget. Give the app read access to the directory (or this part of it) to count its members"
                    ),
                    Kind::Missing => warn!(
                        "app {app}: {group} does not exist in WeCom's directory ({detail}); it stays counted as one member in the rate budget"
                    ),
                    Kind::TooLarge => warn!(
                        "app {app}: {group} reaches more than {MAX_MEMBERS} members or {MAX_DEPARTMENTS} departments; it stays counted as one member in the rate budget rather than held in memory"
                    ),
                    Kind::Full => warn!(
                        "app {app}: the directory holds {MAX_STORED_MEMBERS} member ids already; {group} stays counted as one member in the rate budget"
                    ),
                    Kind::Token | Kind::Unavailable => warn!(
                        "app {app}: cannot read {group} from WeCom's directory ({detail}); {counted}, and it is read again in {}s",
                        self.backoff.as_secs()
                    ),
                }
            }
        }
    }

    /// The group's members, read from WeCom.
    async fn read(&self, group: &Group) -> Result<Vec<String>, Failure> {
        let id = match group {
            Group::Party(id) | Group::Tag(id) => id,
        };
        if !is_wecom_id(id) {
            return Err(Failure::new(Kind::Missing, format!("{id:?} is not a WeCom id")));
        }
        let limit = CallLimit {
            deadline: Instant::now() + READ_DEADLINE,
            cap: self.call_timeout,
        };
        let token = self
            .tokens
            .get(limit.timeout())
            .await
            .map_err(|e| Failure::new(Kind::Token, e.to_string()))?;
        let mut reader = Reader {
            inner: self,
            limit,
            token,
            renewed: false,
            members: Members::new(MAX_MEMBERS),
            departments: HashSet::new(),
        };
        match group {
            Group::Party(id) => reader.party(id, true).await?,
            Group::Tag(id) => reader.tag(id).await?,
        }
        Ok(reader.members.into_sorted())
    }
}

/// Clears a group's "being read" flag should its read end without keeping a result
/// (cancelled with the runtime, or a panic).
struct ReadingFlag<'a> {
    inner: &'a Inner,
    group: &'a Group,
    armed: bool,
}

impl Drop for ReadingFlag<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(entry) = self.inner.lock().entries.get_mut(self.group) {
            entry.reading = false;
        }
    }
}

/// One group's read: its token, deadline, and what it found so far.
struct Reader<'a> {
    inner: &'a Inner,
    limit: CallLimit,
    token: Secret,
    /// The token was replaced once already during this read.
    renewed: bool,
    members: Members,
    /// Departments read (a tag's parties may overlap).
    departments: HashSet<u64>,
}

impl Reader<'_> {
    /// A party and the parties below it. `named`: the group itself (its absence is the
    /// group's), not one of a tag's parties (which may have been deleted since).
    async fn party(&mut self, id: &str, named: bool) -> Result<(), Failure> {
        let tree = match self.get(Endpoint::DepartmentSimpleList, &[("id", id)]).await {
            Ok(reply) => reply,
            Err(failure) if failure.kind == Kind::Missing && !named => return Ok(()),
            Err(failure) => return Err(failure),
        };
        let mut departments = department_ids(&tree).map_err(Failure::bad_reply)?;
        if let Ok(own) = id.parse::<u64>() {
            departments.push(own);
        }
        departments.sort_unstable();
        departments.dedup();
        for department in departments {
            if !self.departments.insert(department) {
                continue;
            }
            if self.departments.len() > MAX_DEPARTMENTS {
                return Err(Failure::new(Kind::TooLarge, String::new()));
            }
            let department = department.to_string();
            let reply = match self
                .get(
                    Endpoint::UserSimpleList,
                    &[("department_id", department.as_str())],
                )
                .await
            {
                Ok(reply) => reply,
                // Deleted between the two calls: it reaches nobody now.
                Err(failure) if failure.kind == Kind::Missing => continue,
                Err(failure) => return Err(failure),
            };
            let users = userids(&reply).map_err(Failure::bad_reply)?;
            self.members.add(users)?;
        }
        Ok(())
    }

    async fn tag(&mut self, id: &str) -> Result<(), Failure> {
        let reply = self.get(Endpoint::TagGet, &[("tagid", id)]).await?;
        let users = userids(&reply).map_err(Failure::bad_reply)?;
        self.members.add(users)?;
        for party in party_ids(&reply).map_err(Failure::bad_reply)? {
            self.party(&party.to_string(), false).await?;
        }
        Ok(())
    }

    /// One call; a rejected token is dropped and the call made again with a fresh one,
    /// once per read.
    async fn get(&mut self, endpoint: Endpoint, query: &[(&str, &str)]) -> Result<Value, Failure> {
        let inner = self.inner;
        let url = match endpoint {
            Endpoint::UserSimpleList => &inner.users_url,
            Endpoint::DepartmentSimpleList => &inner.departments_url,
            _ => &inner.tag_url,
        };
        loop {
            let timeout = self.limit.timeout();
            if timeout.is_zero() {
                return Err(Failure::new(
                    Kind::Unavailable,
                    format!("the read took longer than {}s", READ_DEADLINE.as_secs()),
                ));
            }
            match inner
                .api
                .get_json(endpoint, url, &self.token, query, timeout)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(error) if error.class() == ErrorClass::TokenRejected && !self.renewed => {
                    self.renewed = true;
                    info!("app {}: WeCom rejected the access token while reading the directory; fetching a new one", inner.app);
                    inner.tokens.invalidate(&self.token).await;
                    self.token = inner
                        .tokens
                        .get(self.limit.timeout())
                        .await
                        .map_err(|e| Failure::new(Kind::Token, e.to_string()))?;
                }
                Err(error) => return Err(Failure::from_wecom(error)),
            }
        }
    }
}

/// The members a read found so far, up to a bound.
struct Members {
    ids: BTreeSet<String>,
    max: usize,
}

impl Members {
    fn new(max: usize) -> Members {
        Members {
            ids: BTreeSet::new(),
            max,
        }
    }

    /// WeCom userids are case-insensitive: kept lower-cased, like the budget's user keys.
    fn add(&mut self, users: Vec<String>) -> Result<(), Failure> {
        for user in users {
            self.ids.insert(user.to_lowercase());
            if self.ids.len() > self.max {
                return Err(Failure::new(Kind::TooLarge, String::new()));
            }
        }
        Ok(())
    }

    fn into_sorted(self) -> Vec<String> {
        self.ids.into_iter().collect()
    }
}

/// Department and tag ids are unsigned integers; anything else cannot name one.
fn is_wecom_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u32>().is_ok()
}

/// An id in a reply: WeCom writes integers; a decimal string is taken too.
fn id_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `department/simplelist`: `department_id: [{id, parentid, order}]`.
fn department_ids(reply: &Value) -> Result<Vec<u64>, String> {
    let list = reply["department_id"]
        .as_array()
        .ok_or("department/simplelist answered no department_id list")?;
    list.iter()
        .map(|department| {
            id_of(&department["id"])
                .ok_or_else(|| "department/simplelist answered a department without an id".to_string())
        })
        .collect()
}

/// `user/simplelist` and `tag/get`: `userlist: [{userid, name}]`.
fn userids(reply: &Value) -> Result<Vec<String>, String> {
    let list = reply["userlist"].as_array().ok_or("the reply has no userlist")?;
    list.iter()
        .map(|user| {
            user["userid"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .ok_or_else(|| "a userlist entry has no userid".to_string())
        })
        .collect()
}

/// `tag/get`: `partylist: [ids]`, absent when the tag holds no party.
fn party_ids(reply: &Value) -> Result<Vec<u64>, String> {
    match &reply["partylist"] {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => list
            .iter()
            .map(|id| id_of(id).ok_or_else(|| format!("tag/get answered a party id {id}")))
            .collect(),
        other => Err(format!(
            "tag/get answered a partylist that is not a list: {other}"
        )),
    }
}

/// Why a group could not be read, as far as what happens next is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 60011: the app may not read it.
    Denied,
    /// It does not exist (or its id cannot name one).
    Missing,
    /// More members or departments than are kept.
    TooLarge,
    /// The app's kept member ids are at their bound.
    Full,
    /// No token, or WeCom rejected a fresh one too.
    Token,
    /// The network, WeCom busy, an unreadable reply, another errcode.
    Unavailable,
}

impl Kind {
    /// Whether this is WeCom's answer about the group, which replaces what was read
    /// before; otherwise the old answer is better than none and stays.
    fn is_answer(self) -> bool {
        matches!(self, Kind::Denied | Kind::Missing | Kind::TooLarge | Kind::Full)
    }
}

#[derive(Debug)]
struct Failure {
    kind: Kind,
    /// Never holds the token or a URL carrying it ([`WeComError`] strips them).
    detail: String,
}

impl Failure {
    fn new(kind: Kind, detail: String) -> Failure {
        Failure { kind, detail }
    }

    fn bad_reply(detail: String) -> Failure {
        Failure::new(Kind::Unavailable, detail)
    }

    fn from_wecom(error: WeComError) -> Failure {
        let kind = match error.errcode() {
            Some(60011) => Kind::Denied,
            Some(60003 | 60123 | 40068 | 41017) => Kind::Missing,
            _ if error.class() == ErrorClass::TokenRejected => Kind::Token,
            _ => Kind::Unavailable,
        };
        Failure::new(kind, error.to_string())
    }
}

/// What a finished read changed, for the log.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Quiet,
    /// Read after failures had been logged: this many members.
    ReadAgain(usize),
    /// A failure not logged for this group yet. `kept`: the last answer stays in use.
    Failed {
        kind: Kind,
        detail: String,
        kept: bool,
    },
}

struct Entry {
    /// The last answer: `None` before the first read, or after WeCom said the group cannot
    /// be read.
    members: Option<Arc<[String]>>,
    /// No read starts before this.
    due: Instant,
    reading: bool,
    /// The failure last logged, so a group failing the same way logs once.
    warned: Option<Kind>,
    used: Instant,
}

impl Entry {
    fn held(&self) -> usize {
        self.members.as_ref().map_or(0, |m| m.len())
    }
}

/// Every group of one app, and what was read of them.
#[derive(Default)]
struct Groups {
    entries: HashMap<Group, Entry>,
    /// Member ids held over all entries.
    stored: usize,
    /// The group bound was logged.
    full_logged: bool,
}

/// What a lookup answers.
struct Lookup {
    members: Option<Arc<[String]>>,
    /// A read of the group is to start (it is marked as being read).
    read: bool,
    /// The group bound turned a new group away, for the first time.
    full: bool,
}

impl Groups {
    /// The group's last answer; marks it as being read when a read is due and `can_read`.
    fn lookup(&mut self, group: &Group, now: Instant, refresh: Duration, can_read: bool) -> Lookup {
        let mut lookup = Lookup {
            members: None,
            read: false,
            full: false,
        };
        if !self.entries.contains_key(group) {
            if !can_read {
                return lookup;
            }
            if !self.make_room(now, refresh) {
                lookup.full = !std::mem::replace(&mut self.full_logged, true);
                return lookup;
            }
            self.entries.insert(
                group.clone(),
                Entry {
                    members: None,
                    due: now,
                    reading: false,
                    warned: None,
                    used: now,
                },
            );
        }
        let entry = self.entries.get_mut(group).expect("inserted above");
        entry.used = now;
        lookup.members = entry.members.clone();
        if can_read && !entry.reading && now >= entry.due {
            entry.reading = true;
            lookup.read = true;
        }
        lookup
    }

    /// Room for one more group: at the bound, the group used longest ago goes, if it has
    /// been idle for a refresh interval and is not being read.
    fn make_room(&mut self, now: Instant, refresh: Duration) -> bool {
        if self.entries.len() < MAX_GROUPS {
            return true;
        }
        let idlest = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.reading)
            .min_by_key(|(_, entry)| entry.used)
            .filter(|(_, entry)| now.saturating_duration_since(entry.used) >= refresh)
            .map(|(group, _)| group.clone());
        match idlest.and_then(|group| self.entries.remove(&group)) {
            Some(evicted) => {
                self.stored -= evicted.held();
                true
            }
            None => false,
        }
    }

    /// Keeps what a read found.
    fn keep(
        &mut self,
        group: &Group,
        read: Result<Vec<String>, Failure>,
        now: Instant,
        refresh: Duration,
        backoff: Duration,
    ) -> Event {
        let stored = self.stored;
        let Some(entry) = self.entries.get_mut(group) else {
            return Event::Quiet;
        };
        entry.reading = false;
        let others = stored - entry.held();
        let read = read.and_then(|members| {
            if others + members.len() > MAX_STORED_MEMBERS {
                Err(Failure::new(Kind::Full, String::new()))
            } else {
                Ok(members)
            }
        });
        match read {
            Ok(members) => {
                let count = members.len();
                entry.members = Some(members.into());
                entry.due = now + refresh;
                self.stored = others + count;
                match entry.warned.take() {
                    Some(_) => Event::ReadAgain(count),
                    None => Event::Quiet,
                }
            }
            Err(Failure { kind, detail }) => {
                let kept = !kind.is_answer();
                if kept {
                    entry.due = now + backoff;
                } else {
                    entry.members = None;
                    entry.due = now + refresh;
                    self.stored = others;
                }
                if entry.warned == Some(kind) {
                    Event::Quiet
                } else {
                    entry.warned = Some(kind);
                    Event::Failed {
                        kind,
                        detail,
                        kept: kept && entry.members.is_some(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const REFRESH: Duration = Duration::from_secs(600);
    const BACKOFF: Duration = Duration::from_secs(60);

    fn party(id: &str) -> Group {
        Group::Party(id.into())
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn failure(kind: Kind) -> Result<Vec<String>, Failure> {
        Err(Failure::new(kind, "why".into()))
    }

    #[test]
    fn a_group_is_read_once_at_a_time_and_again_after_the_refresh_interval() {
        let mut groups = Groups::default();
        let start = Instant::now();
        let first = groups.lookup(&party("2"), start, REFRESH, true);
        assert!(first.members.is_none() && first.read);
        let meanwhile = groups.lookup(&party("2"), start, REFRESH, true);
        assert!(!meanwhile.read, "one read in flight per group");
        let event = groups.keep(&party("2"), Ok(ids(&["alice", "bob"])), start, REFRESH, BACKOFF);
        assert_eq!(event, Event::Quiet);
        let fresh = groups.lookup(&party("2"), start + REFRESH / 2, REFRESH, true);
        assert_eq!(fresh.members.as_deref(), Some(&ids(&["alice", "bob"])[..]));
        assert!(!fresh.read);
        let stale = groups.lookup(&party("2"), start + REFRESH, REFRESH, true);
        assert_eq!(
            stale.members.as_deref(),
            Some(&ids(&["alice", "bob"])[..]),
            "stale is used"
        );
        assert!(stale.read);
        assert_eq!(groups.stored, 2);
    }

    #[test]
    fn outside_a_runtime_nothing_is_started_or_kept() {
        let mut groups = Groups::default();
        let lookup = groups.lookup(&party("2"), Instant::now(), REFRESH, false);
        assert!(lookup.members.is_none() && !lookup.read);
        assert!(groups.entries.is_empty());
    }

    #[test]
    fn a_failure_keeps_the_last_answer_and_waits_the_backoff_and_logs_once_per_kind() {
        let mut groups = Groups::default();
        let start = Instant::now();
        groups.lookup(&party("2"), start, REFRESH, true);
        groups.keep(&party("2"), Ok(ids(&["alice"])), start, REFRESH, BACKOFF);
        let later = start + REFRESH;
        assert!(groups.lookup(&party("2"), later, REFRESH, true).read);
        let event = groups.keep(&party("2"), failure(Kind::Unavailable), later, REFRESH, BACKOFF);
        assert!(matches!(
            event,
            Event::Failed {
                kind: Kind::Unavailable,
                kept: true,
                ..
            }
        ));
        let lookup = groups.lookup(&party("2"), later + BACKOFF / 2, REFRESH, true);
        assert_eq!(lookup.members.as_deref(), Some(&ids(&["alice"])[..]));
        assert!(!lookup.read, "not before the backoff");
        assert!(groups.lookup(&party("2"), later + BACKOFF, REFRESH, true).read);
        let again = groups.keep(
            &party("2"),
            failure(Kind::Unavailable),
            later + BACKOFF,
            REFRESH,
            BACKOFF,
        );
        assert_eq!(again, Event::Quiet, "the same failure is logged once");
        assert!(
            groups
                .lookup(&party("2"), later + BACKOFF * 2, REFRESH, true)
                .read
        );
        let token = groups.keep(
            &party("2"),
            failure(Kind::Token),
            later + BACKOFF * 2,
            REFRESH,
            BACKOFF,
        );
        assert!(
            matches!(
                token,
                Event::Failed {
                    kind: Kind::Token,
                    ..
                }
            ),
            "another kind is"
        );
        assert!(
            groups
                .lookup(&party("2"), later + BACKOFF * 3, REFRESH, true)
                .read
        );
        let back = groups.keep(
            &party("2"),
            Ok(ids(&["alice", "carol"])),
            later + BACKOFF * 3,
            REFRESH,
            BACKOFF,
        );
        assert_eq!(back, Event::ReadAgain(2));
    }

    #[test]
    fn wecoms_no_replaces_the_last_answer_until_the_next_refresh() {
        for kind in [Kind::Denied, Kind::Missing, Kind::TooLarge] {
            let mut groups = Groups::default();
            let start = Instant::now();
            groups.lookup(&party("2"), start, REFRESH, true);
            groups.keep(&party("2"), Ok(ids(&["alice"])), start, REFRESH, BACKOFF);
            groups.lookup(&party("2"), start + REFRESH, REFRESH, true);
            let event = groups.keep(&party("2"), failure(kind), start + REFRESH, REFRESH, BACKOFF);
            assert!(
                matches!(&event, Event::Failed { kind: k, kept: false, .. } if *k == kind),
                "{kind:?}: {event:?}"
            );
            let lookup = groups.lookup(&party("2"), start + REFRESH + BACKOFF, REFRESH, true);
            assert!(lookup.members.is_none(), "{kind:?}");
            assert!(
                !lookup.read,
                "{kind:?}: the answer is kept for a refresh interval"
            );
            assert_eq!(groups.stored, 0);
        }
    }

    #[test]
    fn member_ids_are_bounded_per_group_and_per_app() {
        let mut members = Members::new(3);
        members.add(ids(&["Bob", "alice", "BOB"])).unwrap();
        assert_eq!(
            members.into_sorted(),
            ids(&["alice", "bob"]),
            "lower-cased, deduplicated, sorted"
        );
        let mut members = Members::new(3);
        let too_many = members.add(ids(&["a", "b", "c", "d"])).unwrap_err();
        assert_eq!(too_many.kind, Kind::TooLarge);

        let mut groups = Groups::default();
        let now = Instant::now();
        groups.lookup(&party("1"), now, REFRESH, true);
        let many: Vec<String> = (0..MAX_STORED_MEMBERS - 1).map(|i| format!("u{i}")).collect();
        groups.keep(&party("1"), Ok(many), now, REFRESH, BACKOFF);
        groups.lookup(&party("2"), now, REFRESH, true);
        let event = groups.keep(&party("2"), Ok(ids(&["x", "y"])), now, REFRESH, BACKOFF);
        assert!(
            matches!(event, Event::Failed { kind: Kind::Full, .. }),
            "{event:?}"
        );
        assert_eq!(groups.stored, MAX_STORED_MEMBERS - 1);
        // A group's new read replaces its own old one in the count.
        groups.lookup(&party("1"), now + REFRESH, REFRESH, true);
        groups.keep(&party("1"), Ok(ids(&["a"])), now + REFRESH, REFRESH, BACKOFF);
        assert_eq!(groups.stored, 1);
    }

    #[test]
    fn at_the_group_bound_only_idle_groups_make_room() {
        let mut groups = Groups::default();
        let start = Instant::now();
        for i in 0..MAX_GROUPS {
            let group = party(&i.to_string());
            groups.lookup(&group, start, REFRESH, true);
            groups.keep(&group, Ok(ids(&["a"])), start, REFRESH, BACKOFF);
        }
        groups.lookup(&party("0"), start + REFRESH / 2, REFRESH, true);
        let turned_away = groups.lookup(&party("new"), start + REFRESH / 2, REFRESH, true);
        assert!(turned_away.full && !turned_away.read);
        let again = groups.lookup(&party("newer"), start + REFRESH / 2, REFRESH, true);
        assert!(!again.full, "logged once");
        let admitted = groups.lookup(&party("new"), start + REFRESH, REFRESH, true);
        assert!(admitted.read);
        assert_eq!(groups.entries.len(), MAX_GROUPS);
        assert!(groups.entries.contains_key(&party("0")), "used recently, so kept");
        assert_eq!(groups.stored, MAX_GROUPS - 1);
    }

    #[test]
    fn ids_that_cannot_name_a_department_or_tag_are_not_asked_for() {
        for id in ["1", "0", "4294967295"] {
            assert!(is_wecom_id(id), "{id}");
        }
        for id in ["", "abc", "-1", "1.5", " 1", "4294967296", "{{labels.team}}"] {
            assert!(!is_wecom_id(id), "{id}");
        }
    }

    #[test]
    fn replies_are_read_as_the_pages_describe_them() {
        let tree = json!({"errcode": 0, "department_id": [{"id": 2, "parentid": 1, "order": 0}, {"id": "3", "parentid": 2}]});
        assert_eq!(department_ids(&tree).unwrap(), vec![2, 3]);
        assert!(department_ids(&json!({"errcode": 0})).is_err());
        assert!(department_ids(&json!({"department_id": [{"parentid": 1}]})).is_err());

        let users = json!({"userlist": [{"userid": "Alice", "name": "A"}, {"userid": "bob"}]});
        assert_eq!(userids(&users).unwrap(), ids(&["Alice", "bob"]));
        assert!(
            userids(&json!({"errcode": 0})).is_err(),
            "a missing list is not an empty one"
        );
        assert!(userids(&json!({"userlist": [{"name": "x"}]})).is_err());

        assert_eq!(party_ids(&json!({"partylist": [2, 3]})).unwrap(), vec![2, 3]);
        assert_eq!(party_ids(&json!({"userlist": []})).unwrap(), Vec::<u64>::new());
        assert!(party_ids(&json!({"partylist": "2|3"})).is_err());
    }

    #[test]
    fn errcodes_are_read_as_the_directory_pages_say() {
        let api = |errcode| WeComError::Api {
            endpoint: Endpoint::UserSimpleList,
            errcode,
            errmsg: "x".into(),
        };
        let kinds = [
            (60011, Kind::Denied),
            (60003, Kind::Missing),
            (60123, Kind::Missing),
            (40068, Kind::Missing),
            (41017, Kind::Missing),
            (40014, Kind::Token),
            (42001, Kind::Token),
            (-1, Kind::Unavailable),
            (45009, Kind::Unavailable),
        ];
        for (errcode, kind) in kinds {
            assert_eq!(Failure::from_wecom(api(errcode)).kind, kind, "{errcode}");
        }
        let status = WeComError::HttpStatus {
            endpoint: Endpoint::TagGet,
            status: 502,
        };
        assert_eq!(Failure::from_wecom(status).kind, Kind::Unavailable);
    }

    #[test]
    fn budget_keys_name_the_group() {
        assert_eq!(party("2").budget_key(), "party:2");
        assert_eq!(Group::Tag("1".into()).budget_key(), "tag:1");
    }

    #[test]
    fn a_dry_run_app_knows_no_group() {
        let config = crate::config::Config::from_yaml(
            "apps: [{name: ops, corp_id: ww1, agent_id: 1}]\nroutes: [{name: all, app: ops, msgtype: text, to: {users: [a]}}]\n",
            "test.yml",
            std::path::Path::new(""),
        )
        .unwrap();
        let api = WeComApi::new(crate::metrics::Metrics::new());
        let directory = Directory::new(&config.apps[0], api, None, DEFAULT_REFRESH);
        assert!(directory.members(&party("2")).is_none());
    }
}
