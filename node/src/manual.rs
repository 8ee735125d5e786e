//! `spdu man`: the manual page, in roff, generated from the command line's own definition, so
//! that it never disagrees with `--help`.
//!
//! `clap_mangen` renders the title, name, synopsis, description and global options; every
//! subcommand then gets its own subsection (usage, description, options), followed by what a
//! packaged node involves: files, signals, environment and exit status.

use std::io::Write;

use anyhow::Context;

/// Writes the manual page for the command line `cli` (the `spdu` command) to `out`.
pub fn render(cli: clap::Command, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let man = clap_mangen::Man::new(cli.clone()).section("1").date(page_date()).manual("spdu manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut text = String::from_utf8(page).context("clap_mangen wrote invalid UTF-8")?;
    text.push_str(".SH COMMANDS\n");
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        text.push_str(&subcommand(cli.get_name(), command));
    }
    text.push_str(EXTRA_SECTIONS);
    out.write_all(text.as_bytes()).context("writing the manual page")?;
    man.render_version_section(out).context("writing the manual page")?;
    Ok(())
}

/// The page's date (`YYYY-MM-DD`): `SOURCE_DATE_EPOCH` when set (reproducible builds), else
/// today. An empty date would shift the other `.TH` arguments.
fn page_date() -> String {
    let seconds = (std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_secs())
        });
    let (year, month, day) = civil_date(seconds / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// One subcommand's subsection: its usage line, its description and its arguments.
fn subcommand(program: &str, command: &clap::Command) -> String {
    let arguments: Vec<&clap::Arg> =
        command.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != "help").collect();
    let mut usage = vec![format!(r"\fB{program} {}\fR", escape(command.get_name()))];
    for arg in &arguments {
        let form = argument_form(arg);
        usage.push(if arg.is_required_set() { form } else { format!("[{form}]") });
    }
    let mut text = format!(".SS \"{program} {}\"\n{}\n.br\n", command.get_name(), usage.join(" "));
    if let Some(about) = command.get_long_about().or_else(|| command.get_about()) {
        text.push_str(&paragraphs(&about.to_string()));
    }
    for arg in arguments {
        text.push_str(&format!(".TP\n{}\n", argument_form(arg)));
        if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
            text.push_str(&paragraphs(&help.to_string()));
        }
        let values: Vec<String> = (arg.get_possible_values().iter())
            .filter(|v| !v.is_hide_set())
            .map(|v| escape(v.get_name()))
            .collect();
        if !values.is_empty() {
            text.push_str(&format!(".br\nOne of: {}.\n", values.join(", ")));
        }
    }
    text
}

/// How an argument is written: `\fB\-\-config\fR \fIFILE\fR`, or `\fINAME\fR` for a positional.
fn argument_form(arg: &clap::Arg) -> String {
    let value = (arg.get_value_names().and_then(|names| names.first()))
        .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
    match arg.get_long() {
        Some(long) if arg.get_action().takes_values() => {
            format!(r"\fB\-\-{}\fR \fI{}\fR", escape(long), escape(&value))
        }
        Some(long) => format!(r"\fB\-\-{}\fR", escape(long)),
        None => format!(r"\fI{}\fR", escape(&value)),
    }
}

/// Text as roff paragraphs: one input line per line, `.PP` between paragraphs.
fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&escape(line));
            out.push('\n');
        }
    }
    out
}

/// `text` safe as a roff text line: backslashes and hyphens escaped, and a leading `.` or `'`
/// (which would start a request) guarded.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', r"\e").replace('-', r"\-");
    if escaped.starts_with(['.', '\'']) { format!(r"\&{escaped}") } else { escaped }
}

const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/spdu/spdu.toml\fR
The config read by the packaged service (\fBspdu.service\fR).
.TP
\fI/etc/spdu/spdu.toml.example\fR
A complete, commented example config.
.TP
\fI/var/lib/spdu/node.key\fR
The node's private key (mode 0600, owned by the user running the node), written by
\fBspdu keygen \-\-out\fR; \fInode.key.incarnation\fR beside it holds the number that grows on
every start.
.TP
\fI/lib/systemd/system/spdu.service\fR
The hardened systemd unit: runs \fBspdu run \-\-config /etc/spdu/spdu.toml\fR as user
\fBspdu\fR with \fBType=notify\fR and a watchdog.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop the node: listeners close, tasks finish, and the process exits 0.
.TP
\fBSIGHUP\fR
Reload the config (\fBsystemctl reload spdu\fR).
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log filter for \fBspdu run\fR (default \fBinfo,hickory_server=warn,quinn=warn\fR); logs go to
standard error, hence to the journal under systemd.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd: \fBspdu run\fR reports READY=1 once every socket is bound, a STATUS= line
(what each pool name answers with, peers reachable), STOPPING=1 on shutdown, and WATCHDOG=1 at
half the watchdog interval while its membership loop runs.
.SH "EXIT STATUS"
0 on success; 1 on any error, printed on standard error with the file, line and field at fault
for config mistakes.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBdig\fR(1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_794), (2026, 12, 7));
    }

    #[test]
    fn roff_requests_and_escapes_cannot_come_from_help_text() {
        assert_eq!(escape(".hidden"), r"\&.hidden");
        assert_eq!(escape("'quote"), r"\&'quote");
        assert_eq!(escape(r"a\b-c"), r"a\eb\-c");
    }
}
