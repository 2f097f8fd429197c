//! DNS-1123 name rules used for object names, container names and label keys.

/// Maximum length of a DNS-1123 subdomain (most object names).
pub const SUBDOMAIN_MAX: usize = 253;
/// Maximum length of a DNS-1123 label (namespaces, services, container names).
pub const LABEL_MAX: usize = 63;

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks a DNS-1123 label; returns the reason it is invalid, if any.
pub fn check_dns1123_label(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > LABEL_MAX {
        return Some(format!("must be no more than {LABEL_MAX} characters"));
    }
    let ok_chars = name.chars().all(|c| is_alnum_lower(c) || c == '-');
    let ok_ends = name.starts_with(is_alnum_lower) && name.ends_with(is_alnum_lower);
    if !ok_chars || !ok_ends {
        return Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        );
    }
    None
}

/// Checks a DNS-1123 subdomain; returns the reason it is invalid, if any.
pub fn check_dns1123_subdomain(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > SUBDOMAIN_MAX {
        return Some(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    let parts_ok = name.split('.').all(|p| {
        !p.is_empty()
            && p.chars().all(|c| is_alnum_lower(c) || c == '-')
            && p.starts_with(is_alnum_lower)
            && p.ends_with(is_alnum_lower)
    });
    if !parts_ok {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
             or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        );
    }
    None
}

/// Checks a label or annotation key (`[prefix/]name`).
pub fn check_qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(e) = check_dns1123_subdomain(p)
    {
        return Some(format!("prefix part {e}"));
    }
    let ok = !name.is_empty()
        && name.len() <= LABEL_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character"
                .into(),
        );
    }
    None
}

/// Checks a label value (may be empty).
pub fn check_label_value(v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let ok = v.len() <= LABEL_MAX
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or \
         '.', and must start and end with an alphanumeric character"
            .into()
    })
}

/// Alphabet Kubernetes uses for random name suffixes (no vowels, no confusable characters).
pub const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random 5-character suffix for `generateName`.
pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5).map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_dns1123_label("my-nginx").is_none());
        assert!(check_dns1123_label("My_nginx").is_some());
        assert!(check_dns1123_label("-a").is_some());
        assert!(check_dns1123_label(&"a".repeat(64)).is_some());
    }

    #[test]
    fn subdomains() {
        assert!(check_dns1123_subdomain("a.b-c.d").is_none());
        assert!(check_dns1123_subdomain("a..b").is_some());
        assert!(check_dns1123_subdomain("UPPER").is_some());
        assert!(check_dns1123_subdomain("").is_some());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(check_qualified_name("app").is_none());
        assert!(check_qualified_name("kubernetes.io/change-cause").is_none());
        assert!(check_qualified_name("bad key").is_some());
        assert!(check_label_value("").is_none());
        assert!(check_label_value("my-nginx-pods-label").is_none());
        assert!(check_label_value("-x").is_some());
        let s = random_suffix();
        assert_eq!(s.len(), 5);
    }
}
