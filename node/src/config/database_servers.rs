//! `--database-server name=mysql://...`: the servers automatic failover watches.

use actors::database::DatabaseServerSpec;

use super::ConfigError;

/// Parses every entry; names must be given and distinct, URLs must be `mysql://`.
pub(super) fn parse_database_servers(entries: &[String]) -> Result<Vec<DatabaseServerSpec>, ConfigError> {
    let mut servers: Vec<DatabaseServerSpec> = Vec::with_capacity(entries.len());
    for entry in entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
    {
        let bad = || ConfigError::BadDatabaseServer(entry.to_owned());
        let (name, url) = entry.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let name_is_usable = !name.is_empty()
            && name
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '-' || character == '_');
        if !name_is_usable || !url.starts_with("mysql://") || servers.iter().any(|server| server.name == name) {
            return Err(bad());
        }
        servers.push(DatabaseServerSpec {
            name: name.to_owned(),
            admin_url: url.to_owned(),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<Vec<DatabaseServerSpec>, ConfigError> {
        parse_database_servers(&entries.iter().map(|entry| entry.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn servers_are_named_mysql_urls_with_distinct_names() {
        let servers = parse(&["master=mysql://a:b@h:1/", " replica-1=mysql://a:b@h:2/"]).unwrap();
        assert_eq!(
            servers.iter().map(|server| server.name.as_str()).collect::<Vec<_>>(),
            ["master", "replica-1"]
        );
        assert_eq!(servers[1].admin_url, "mysql://a:b@h:2/");
        for bad in [
            &["mysql://a:b@h:1/"][..],
            &["=mysql://a:b@h:1/"],
            &["master=postgres://h/"],
            &["a b=mysql://h/"],
            &["master=mysql://h:1/", "master=mysql://h:2/"],
        ] {
            assert!(
                matches!(parse(bad), Err(ConfigError::BadDatabaseServer(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
