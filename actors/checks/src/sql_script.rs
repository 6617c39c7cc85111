//! Splitting the project's own SQL scripts (migrations, server set-up templates) into
//! statements. They are simple on purpose: `--` comment lines, and each statement ends
//! with `;` at the end of a line. Not a SQL parser: a `;` inside a string at a line's end
//! would split there, so the scripts never contain one.

/// The statements of `script`, without their final `;`, comment lines dropped, empty
/// statements skipped.
pub fn statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                statements.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_owned());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_over_lines_and_drops_comments_and_empty_ones() {
        let script = "-- users\nCREATE USER 'a'@'h';\n;\nCHANGE MASTER TO\n  MASTER_PORT = 1,\n  MASTER_USE_GTID = slave_pos;\n\n-- last, unterminated\nSTART SLAVE\n";
        assert_eq!(
            statements(script),
            vec![
                "CREATE USER 'a'@'h'".to_owned(),
                "CHANGE MASTER TO\n  MASTER_PORT = 1,\n  MASTER_USE_GTID = slave_pos".to_owned(),
                "START SLAVE".to_owned(),
            ]
        );
    }
}
