//! Splitting recipients into batches WeCom accepts in one `message/send`.

use crate::config::Recipients;

pub const MAX_USERS: usize = 1000;
pub const MAX_PARTIES: usize = 100;
pub const MAX_TAGS: usize = 100;

/// Recipients split so that no batch exceeds 1000 users, 100 parties or 100 tags.
pub fn batches(to: &Recipients) -> Vec<Recipients> {
    let count = |len: usize, max: usize| len.div_ceil(max);
    let n = count(to.users.len(), MAX_USERS)
        .max(count(to.parties.len(), MAX_PARTIES))
        .max(count(to.tags.len(), MAX_TAGS))
        .max(1);
    let chunk = |ids: &[String], max: usize, i: usize| -> Vec<String> {
        ids.chunks(max).nth(i).map(<[String]>::to_vec).unwrap_or_default()
    };
    (0..n)
        .map(|i| Recipients {
            users: chunk(&to.users, MAX_USERS, i),
            parties: chunk(&to.parties, MAX_PARTIES, i),
            tags: chunk(&to.tags, MAX_TAGS, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn small_recipient_lists_go_in_one_batch() {
        let to = Recipients {
            users: ids("u", 3),
            parties: ids("", 2),
            tags: vec![],
        };
        assert_eq!(batches(&to), vec![to]);
    }

    #[test]
    fn large_lists_are_split_within_wecom_limits_and_nobody_is_lost() {
        let to = Recipients {
            users: ids("u", 2500),
            parties: ids("", 150),
            tags: ids("", 100),
        };
        let batches = batches(&to);
        assert_eq!(batches.len(), 3);
        for batch in &batches {
            assert!(
                batch.users.len() <= MAX_USERS
                    && batch.parties.len() <= MAX_PARTIES
                    && batch.tags.len() <= MAX_TAGS
            );
            assert!(!batch.is_empty());
        }
        let users: Vec<String> = batches.iter().flat_map(|b| b.users.clone()).collect();
        let parties: Vec<String> = batches.iter().flat_map(|b| b.parties.clone()).collect();
        assert_eq!(users, to.users);
        assert_eq!(parties, to.parties);
    }
}
