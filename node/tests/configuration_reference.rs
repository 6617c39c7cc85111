//! docs/configuration.md cannot drift from `parley --help`: every flag the binary
//! prints is a row of the reference table, with its environment variable and its
//! default, and every flag of the table exists.

use std::collections::BTreeMap;
use std::process::Command;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");

/// One flag as `parley --help` prints it.
#[derive(Debug, Default)]
struct HelpFlag {
    env: Option<String>,
    default: Option<String>,
}

/// `parley --help`, run with an empty environment so that no variable of the caller
/// shows up as a value.
fn help_text() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("running parley --help");
    assert!(output.status.success(), "parley --help failed: {output:?}");
    String::from_utf8(output.stdout).expect("parley --help prints UTF-8")
}

/// The long flag a help line introduces (`  -h, --help`, `      --listen <LISTEN>`).
/// Descriptions are indented deeper, so a description mentioning a flag is not taken
/// for one.
fn introduced_flag(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 6 {
        return None;
    }
    let rest = match trimmed.strip_prefix('-') {
        Some(rest) if !rest.starts_with('-') => rest.split_once(", ")?.1,
        Some(_) => trimmed,
        None => return None,
    };
    let flag = rest.split_whitespace().next()?;
    (flag.starts_with("--") && flag.len() > 2).then(|| flag.to_owned())
}

/// The text between `[name: ` and the matching `]` on a line, e.g. `[env: PARLEY_LISTEN=]`.
fn bracketed<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("[{name}: "))? + name.len() + 3;
    let end = line[start..].find(']')? + start;
    Some(&line[start..end])
}

/// Every flag of the help text, with what it says about the flag.
fn help_flags(help: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags: BTreeMap<String, HelpFlag> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        if let Some(flag) = introduced_flag(line) {
            flags.entry(flag.clone()).or_default();
            current = Some(flag);
            continue;
        }
        let Some(flag) = current.as_ref() else { continue };
        let entry = flags.get_mut(flag).expect("the current flag was inserted");
        if let Some(env) = bracketed(line, "env") {
            // `NAME=value` (empty here), or `NAME` alone for hidden values.
            entry.env = Some(env.split('=').next().unwrap_or(env).to_owned());
        }
        if let Some(default) = bracketed(line, "default") {
            entry.default = Some(default.to_owned());
        }
    }
    flags
}

/// The reference table's rows by flag: rows whose first cell is a `--flag` in backticks.
fn reference_rows(reference: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for line in reference.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let Some((first_cell, _)) = row.split_once('|') else {
            continue;
        };
        let first_cell = first_cell.trim();
        let Some(flag) = first_cell.strip_prefix('`').and_then(|cell| cell.strip_suffix('`')) else {
            continue;
        };
        if flag.starts_with("--") {
            let previous = rows.insert(flag.to_owned(), line.to_owned());
            assert!(previous.is_none(), "{flag} has two rows in docs/configuration.md");
        }
    }
    rows
}

#[test]
fn the_help_text_is_parsed() {
    let flags = help_flags(help_text().as_str());
    assert!(
        flags.len() > 30,
        "only {} flags parsed from parley --help: {flags:?}",
        flags.len()
    );
    let listen = &flags["--listen"];
    assert_eq!(listen.env.as_deref(), Some("PARLEY_LISTEN"));
    assert_eq!(listen.default.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(flags["--jwt-secret"].env.as_deref(), Some("PARLEY_JWT_SECRET"));
    assert!(flags.contains_key("--help") && flags.contains_key("--version"));
}

#[test]
fn every_flag_of_parley_help_is_documented_with_its_variable_and_default_and_no_other() {
    let flags = help_flags(help_text().as_str());
    let reference = std::fs::read_to_string(REFERENCE).expect("reading docs/configuration.md");
    let rows = reference_rows(&reference);

    let mut disagreements = Vec::new();
    for (flag, help) in &flags {
        let Some(row) = rows.get(flag) else {
            disagreements.push(format!("{flag}: no row whose first cell is `{flag}`"));
            continue;
        };
        if let Some(env) = &help.env {
            if !row.contains(&format!("`{env}`")) {
                disagreements.push(format!("{flag}: its row does not name `{env}`"));
            }
        }
        if let Some(default) = &help.default {
            if !row.contains(&format!("`{default}`")) {
                disagreements.push(format!("{flag}: its row does not give the default `{default}`"));
            }
        }
    }
    for flag in rows.keys().filter(|flag| !flags.contains_key(*flag)) {
        disagreements.push(format!("{flag}: documented, but `parley --help` has no such flag"));
    }
    assert!(
        disagreements.is_empty(),
        "docs/configuration.md and `parley --help` disagree:\n  {}",
        disagreements.join("\n  ")
    );
}
