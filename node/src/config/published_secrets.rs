//! Secrets everybody knows: the examples the repository once shipped in `compose/.env`,
//! the development defaults, and anything still saying `change-me`. A node refuses them
//! outside `--dev`: with a published JWT secret anyone forges tokens for any user, with
//! a published cookie anyone joins the cluster, with a published database password
//! anyone on the network reads and writes every table.

use super::{DEV_CLUSTER_COOKIE, DEV_JWT_SECRET};

/// Every secret value the repository has published: `compose/.env` shipped these as
/// examples (it ships them empty now, and compose generates its own), and the source
/// holds the development defaults.
pub const PUBLISHED_SECRETS: &[&str] = &[
    "example-jwt-secret-change-me-4f7d0c2a9b8e61d3",
    "example-cluster-cookie-change-me-8a1e5b93c7",
    "example-app-password-change-me-31c9",
    "example-replication-password-change-me-7e02",
    DEV_JWT_SECRET,
    DEV_CLUSTER_COOKIE,
];

/// The placeholder phrase of example values, compared without case or separators so
/// that `CHANGE_ME` and `changeMe` are caught too. A random secret of hex or base64
/// digits practically never spells it.
const PLACEHOLDER_PHRASE: &str = "changeme";

/// Whether `value` is a published secret or an example that was meant to be replaced.
pub fn is_published_secret(value: &str) -> bool {
    if PUBLISHED_SECRETS.contains(&value) {
        return true;
    }
    let letters_and_digits: String = value
        .chars()
        .filter(|character| !matches!(character, '-' | '_' | ' ' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    letters_and_digits.contains(PLACEHOLDER_PHRASE)
}

/// The password of a `mysql://user:password@host:port/database` URL, as written (no
/// percent-decoding: the published passwords need none). None when the URL has none.
pub fn database_url_password(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    // The authority ends at the path; the user information ends at its last `@`.
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    let (user_information, _host) = authority.rsplit_once('@')?;
    user_information.split_once(':').map(|(_, password)| password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_examples_the_development_defaults_and_placeholders_are_published() {
        for published in PUBLISHED_SECRETS {
            assert!(is_published_secret(published), "{published}");
        }
        for placeholder in [
            "my-own-secret-change-me-later-0123456789",
            "MY-OWN-SECRET-CHANGE-ME-LATER-0123456789",
            "my_own_secret_CHANGE_ME_0123456789abcdef",
            "myownsecretchangeme0123456789abcdef01234",
            "my own secret, Change Me, 0123456789abcdef",
        ] {
            assert!(is_published_secret(placeholder), "{placeholder}");
        }
        for own in [
            "4f7d0c2a9b8e61d34f7d0c2a9b8e61d34f7d0c2a9b8e61d3",
            "parley-test-secret-0123456789abcdef0123456789",
            "change-everything-but-me-0123456789abcdef",
        ] {
            assert!(!is_published_secret(own), "{own}");
        }
    }

    #[test]
    fn the_password_is_read_from_a_database_url() {
        assert_eq!(
            database_url_password("mysql://parley:example-app-password-change-me-31c9@master:3306/parley"),
            Some("example-app-password-change-me-31c9")
        );
        assert_eq!(database_url_password("mysql://u:p@a@127.0.0.1:1/parley"), Some("p@a"));
        assert_eq!(database_url_password("mysql://parley:@master:3306/parley"), Some(""));
        assert_eq!(database_url_password("mysql://parley@master:3306/parley"), None);
        assert_eq!(database_url_password("mysql://master:3306/parley?user=x@y"), None);
    }
}
