//! Users and groups: parsing the image's /etc/passwd and /etc/group and resolving a
//! `user[:group]` string (names or numbers) to ids plus supplementary groups. Pure logic.

/// Errors while resolving a user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// The user name is not in the image's /etc/passwd.
    #[error("unknown user {0:?} (not in the image's /etc/passwd)")]
    UnknownUser(String),
    /// The group name is not in the image's /etc/group.
    #[error("unknown group {0:?} (not in the image's /etc/group)")]
    UnknownGroup(String),
}

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory, when known.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry { name: f[0], uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5] })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`, …) against the file contents.
/// Supplementary groups are `extra`, and with `group_file` also the groups of /etc/group listing
/// the user's name.
pub fn resolve(
    spec: &str,
    passwd: &str,
    group: &str,
    extra: &[u32],
    group_file: bool,
) -> Result<Identity, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd_entries(passwd).find(|e| e.name == user_part || user_part.parse() == Ok(e.uid));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.to_string()), Some(e.home.to_string())),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => return Err(UserError::UnknownUser(user_part.to_string())),
    };
    if let Some(g) = group_part {
        gid = match group_entries(group).find(|(n, id, _)| *n == g || g.parse() == Ok(*id)) {
            Some((_, id, _)) => id,
            None => g.parse().map_err(|_| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    let mut groups: Vec<u32> = extra.to_vec();
    if let Some(name) = name.as_ref().filter(|_| group_file) {
        for (_, id, members) in group_entries(group) {
            if members.contains(&name.as_str()) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    Ok(Identity { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nweb:x:1000:1000::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:web,root\nweb:x:1000:\naudio:x:29:web\n";

    #[test]
    fn resolves_names_numbers_and_groups() {
        let id = resolve("web", PASSWD, GROUP, &[], true).unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (1000, 1000, vec![10, 29]));
        assert_eq!(id.home.as_deref(), Some("/home/web"));
        let id = resolve("1000:audio", PASSWD, GROUP, &[5], true).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 29, vec![5, 10, 29]));
        let id = resolve("4242:4343", PASSWD, GROUP, &[], true).unwrap();
        assert_eq!((id.uid, id.gid), (4242, 4343));
    }

    #[test]
    fn without_the_group_file_the_groups_are_exactly_the_extra_ones() {
        // A plain OCI spec (runc): root is listed in wheel, but gets only additionalGids.
        let id = resolve("0:0", PASSWD, GROUP, &[], false).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (0, 0, vec![]));
        let id = resolve("web", PASSWD, GROUP, &[7], false).unwrap();
        assert_eq!(id.groups, vec![7]);
    }

    #[test]
    fn unknown_names_fail() {
        assert_eq!(resolve("ghost", PASSWD, GROUP, &[], true), Err(UserError::UnknownUser("ghost".into())));
        assert_eq!(
            resolve("web:ghosts", PASSWD, GROUP, &[], true),
            Err(UserError::UnknownGroup("ghosts".into()))
        );
    }
}
