//! The argument vectors engines send on every container's life (podman
//! through conmon, containerd's runc shim, berth's own shim), read without
//! clap: building clap's command tree and matching it costs about 0.2 ms of
//! every call, and create+start+delete makes at least four.
//!
//! Only what is understood completely is taken: the verbs `create`,
//! `start`, `run`, `delete`, `kill`, `state` and `exec`, their flags and
//! the global ones, as `--flag value`, `--flag=value` or `-f value`, once
//! each (the list flags of `exec` may repeat). Anything else (help,
//! `--version`, another verb, an unknown or repeated flag, a missing or
//! empty value, a value or positional starting with `-`, `--`, combined
//! short flags, a number out of range, bytes that are not UTF-8) is
//! declined, and clap parses the whole vector as before: its answers,
//! error texts and exit codes stay clap's. The test below holds this
//! parser's results equal to clap's.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{Cli, Command, CreateArgs, ExecArgs};

/// What a flag stands for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Root,
    Log,
    LogFormat,
    Debug,
    SystemdCgroup,
    Rootless,
    Bundle,
    PidFile,
    ConsoleSocket,
    NoPivot,
    NoNewKeyring,
    PreserveFds,
    Detach,
    Keep,
    Force,
    All,
    Process,
    Tty,
    Cwd,
    Env,
    User,
    AdditionalGids,
    Cap,
    NoNewPrivs,
    IgnorePaused,
    Cgroup,
}

/// Whether a flag takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// A switch: `--debug`.
    Switch,
    /// `--root DIR` or `--root=DIR`.
    Value,
    /// `--rootless` (means `true`) or `--rootless=VALUE`.
    Optional,
}

/// One flag as clap's definition in `berth.rs` spells it.
struct Flag {
    long: &'static str,
    short: Option<char>,
    arity: Arity,
    key: Key,
}

const fn flag(long: &'static str, short: Option<char>, arity: Arity, key: Key) -> Flag {
    Flag {
        long,
        short,
        arity,
        key,
    }
}

use Arity::{Optional, Switch, Value};

/// `Cli`'s own flags, valid before and after the verb.
const GLOBAL: &[Flag] = &[
    flag("root", None, Value, Key::Root),
    flag("log", None, Value, Key::Log),
    flag("log-format", None, Value, Key::LogFormat),
    flag("debug", None, Switch, Key::Debug),
    flag("systemd-cgroup", None, Switch, Key::SystemdCgroup),
    flag("rootless", None, Optional, Key::Rootless),
];

/// `CreateArgs`, `create`'s and `run`'s.
const CREATE: &[Flag] = &[
    flag("bundle", Some('b'), Value, Key::Bundle),
    flag("pid-file", None, Value, Key::PidFile),
    flag("console-socket", None, Value, Key::ConsoleSocket),
    flag("no-pivot", None, Switch, Key::NoPivot),
    flag("no-new-keyring", None, Switch, Key::NoNewKeyring),
    flag("preserve-fds", None, Value, Key::PreserveFds),
];

const RUN: &[Flag] = &[
    flag("detach", Some('d'), Switch, Key::Detach),
    flag("keep", None, Switch, Key::Keep),
];

const DELETE: &[Flag] = &[flag("force", Some('f'), Switch, Key::Force)];

const KILL: &[Flag] = &[flag("all", Some('a'), Switch, Key::All)];

/// `ExecArgs`.
const EXEC: &[Flag] = &[
    flag("process", Some('p'), Value, Key::Process),
    flag("detach", Some('d'), Switch, Key::Detach),
    flag("pid-file", None, Value, Key::PidFile),
    flag("tty", Some('t'), Switch, Key::Tty),
    flag("console-socket", None, Value, Key::ConsoleSocket),
    flag("cwd", None, Value, Key::Cwd),
    flag("env", Some('e'), Value, Key::Env),
    flag("user", Some('u'), Value, Key::User),
    flag("additional-gids", Some('g'), Value, Key::AdditionalGids),
    flag("cap", Some('c'), Value, Key::Cap),
    flag("no-new-privs", None, Switch, Key::NoNewPrivs),
    flag("preserve-fds", None, Value, Key::PreserveFds),
    flag("ignore-paused", None, Switch, Key::IgnorePaused),
    flag("cgroup", None, Value, Key::Cgroup),
];

/// The flags that may repeat (clap's `Vec` fields).
const LISTS: &[Key] = &[Key::Env, Key::AdditionalGids, Key::Cap, Key::Cgroup];

/// The verbs taken here: their flags, and how many positionals they need
/// and allow (`exec`'s command after its id is read apart).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Create,
    Start,
    Run,
    Delete,
    Kill,
    State,
    Exec,
}

impl Verb {
    fn named(name: &str) -> Option<Verb> {
        Some(match name {
            "create" => Verb::Create,
            "start" => Verb::Start,
            "run" => Verb::Run,
            "delete" => Verb::Delete,
            "kill" => Verb::Kill,
            "state" => Verb::State,
            "exec" => Verb::Exec,
            _ => return None,
        })
    }

    fn flags(self) -> &'static [&'static [Flag]] {
        match self {
            Verb::Create => &[CREATE],
            Verb::Run => &[CREATE, RUN],
            Verb::Delete => &[DELETE],
            Verb::Kill => &[KILL],
            Verb::Exec => &[EXEC],
            Verb::Start | Verb::State => &[],
        }
    }

    /// (required, allowed) positionals.
    fn positionals(self) -> (usize, usize) {
        match self {
            Verb::Kill => (1, 2),
            _ => (1, 1),
        }
    }
}

/// What the vector said, before it is typed.
#[derive(Default)]
struct Said {
    values: Vec<(Key, String)>,
    positionals: Vec<String>,
    /// `exec`'s command: everything from the first word after its id.
    command: Vec<String>,
}

impl Said {
    fn one(&self, key: Key) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: Key) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn path(&self, key: Key) -> Option<PathBuf> {
        self.one(key).map(PathBuf::from)
    }

    fn string(&self, key: Key) -> Option<String> {
        self.one(key).map(String::from)
    }

    fn switch(&self, key: Key) -> bool {
        self.one(key).is_some()
    }
}

/// `args` (the program's name first) as clap would parse them, or `None`
/// where clap must have its say.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Option<Cli> {
    let args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(OsString::into_string)
        .collect::<Result<_, _>>()
        .ok()?;
    let mut said = Said::default();
    let mut verb = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let flag = lookup(verb, |f| f.long == name)?;
            let value = match (flag.arity, inline) {
                (Switch, None) => String::new(),
                (Switch, Some(_)) => return None,
                (_, Some(value)) => plain(value)?,
                (Value, None) => plain(rest.next()?)?,
                // A following word would be taken as the value: only a
                // last flag or one before another flag means `true`.
                (Optional, None) => match rest.as_slice().first() {
                    Some(next) if !next.starts_with('-') => return None,
                    _ => "true".to_string(),
                },
            };
            record(&mut said, flag.key, value)?;
        } else if let Some(short) = arg.strip_prefix('-') {
            let mut chars = short.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return None;
            };
            let flag = lookup(verb, |f| f.short == Some(c))?;
            let value = match flag.arity {
                Switch => String::new(),
                Value => plain(rest.next()?)?,
                Optional => return None,
            };
            record(&mut said, flag.key, value)?;
        } else if let Some(verb) = verb {
            // clap's `trailing_var_arg`: from exec's first word after the
            // id on, nothing is a flag.
            if verb == Verb::Exec && said.positionals.len() == 1 {
                said.command.push(arg.clone());
                said.command.extend(rest.by_ref().cloned());
            } else {
                said.positionals.push(arg.clone());
            }
        } else {
            verb = Some(Verb::named(arg)?);
        }
    }
    typed(verb?, said)
}

/// The flag `matches` picks among the globals and `verb`'s.
fn lookup(verb: Option<Verb>, matches: impl Fn(&Flag) -> bool) -> Option<&'static Flag> {
    let own = verb.map_or(&[][..], Verb::flags);
    std::iter::once(GLOBAL)
        .chain(own.iter().copied())
        .flatten()
        .find(|f| matches(f))
}

/// A value clap takes as it is: not empty, and not something its lexer
/// might read as a flag.
fn plain(value: &str) -> Option<String> {
    (!value.is_empty() && !value.starts_with('-')).then(|| value.to_string())
}

/// Records a flag; a second one of a single-valued flag is clap's to judge.
fn record(said: &mut Said, key: Key, value: String) -> Option<()> {
    if !LISTS.contains(&key) && said.one(key).is_some() {
        return None;
    }
    said.values.push((key, value));
    Some(())
}

/// A `u32` as clap's value parser reads it; anything unusual is declined.
fn number(text: &str) -> Option<u32> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `said` in `verb`'s typed arguments.
fn typed(verb: Verb, said: Said) -> Option<Cli> {
    let (required, allowed) = verb.positionals();
    let count = said.positionals.len();
    if count < required || count > allowed {
        return None;
    }
    let id = said.positionals[0].clone();
    let preserve_fds = said.one(Key::PreserveFds).map_or(Some(0), number)?;
    let create = || CreateArgs {
        bundle: said.path(Key::Bundle).unwrap_or_else(|| PathBuf::from(".")),
        pid_file: said.path(Key::PidFile),
        console_socket: said.path(Key::ConsoleSocket),
        no_pivot: said.switch(Key::NoPivot),
        no_new_keyring: said.switch(Key::NoNewKeyring),
        preserve_fds,
        id: id.clone(),
    };
    let command = match verb {
        Verb::Create => Command::Create(create()),
        Verb::Run => Command::Run {
            create: create(),
            detach: said.switch(Key::Detach),
            keep: said.switch(Key::Keep),
        },
        Verb::Start => Command::Start { id },
        Verb::State => Command::State { id },
        Verb::Delete => Command::Delete {
            force: said.switch(Key::Force),
            id,
        },
        Verb::Kill => Command::Kill {
            all: said.switch(Key::All),
            signal: said
                .positionals
                .get(1)
                .cloned()
                .unwrap_or_else(|| "SIGTERM".into()),
            id,
        },
        Verb::Exec => Command::Exec(ExecArgs {
            process: said.path(Key::Process),
            detach: said.switch(Key::Detach),
            pid_file: said.path(Key::PidFile),
            tty: said.switch(Key::Tty),
            console_socket: said.path(Key::ConsoleSocket),
            cwd: said.string(Key::Cwd),
            env: said.all(Key::Env),
            user: said.string(Key::User),
            additional_gids: said
                .all(Key::AdditionalGids)
                .iter()
                .map(|g| number(g))
                .collect::<Option<_>>()?,
            cap: said.all(Key::Cap),
            no_new_privs: said.switch(Key::NoNewPrivs),
            preserve_fds,
            ignore_paused: said.switch(Key::IgnorePaused),
            cgroup: said.all(Key::Cgroup),
            id,
            command: said.command.clone(),
        }),
    };
    Some(Cli {
        root: said
            .path(Key::Root)
            .unwrap_or_else(|| PathBuf::from("/run/berth")),
        log: said.path(Key::Log),
        log_format: said.string(Key::LogFormat).unwrap_or_else(|| "text".into()),
        debug: said.switch(Key::Debug),
        systemd_cgroup: said.switch(Key::SystemdCgroup),
        rootless: said.string(Key::Rootless),
        version: false,
        command: Some(command),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::ffi::OsStringExt;

    fn vector(args: &[String]) -> Vec<OsString> {
        std::iter::once("berth".into())
            .chain(args.iter().map(OsString::from))
            .collect()
    }

    /// Whether the fast parser takes `args`; where it does, clap must
    /// take them too, into the same arguments.
    fn taken(args: &[String]) -> bool {
        let fast = parse(vector(args));
        let clap = Cli::try_parse_from(vector(args));
        match (fast, clap) {
            (Some(fast), Ok(clap)) => {
                assert_eq!(fast, clap, "{args:?}");
                true
            }
            (Some(fast), Err(e)) => panic!("{args:?}: taken as {fast:?}, but clap says {e}"),
            (None, _) => false,
        }
    }

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(String::from).collect()
    }

    /// Every spelling of one flag with `value`: long with a space, long
    /// with `=`, short.
    fn spellings(flag: &Flag, value: &str) -> Vec<Vec<String>> {
        let long = format!("--{}", flag.long);
        let mut out = match flag.arity {
            Switch => vec![vec![long]],
            Value => vec![
                vec![long.clone(), value.into()],
                vec![format!("{long}={value}")],
            ],
            // Bare, it would take a following word: see the lines below.
            Optional => vec![vec![format!("{long}={value}")]],
        };
        if let Some(short) = flag.short {
            out.push(match flag.arity {
                Switch => vec![format!("-{short}")],
                _ => vec![format!("-{short}"), value.into()],
            });
        }
        out
    }

    /// A value for each flag, distinct enough to show a mix-up.
    fn value_of(key: Key) -> &'static str {
        match key {
            Key::PreserveFds => "3",
            Key::AdditionalGids => "5",
            Key::LogFormat => "json",
            Key::Rootless => "false",
            Key::Env => "A=1",
            Key::Cap => "CAP_KILL",
            Key::User => "1:2",
            Key::Cwd => "/w",
            _ => "/some/path",
        }
    }

    /// The verbs with the positionals they are tried with.
    const VERBS: &[(&str, &str)] = &[
        ("create", "c1"),
        ("start", "c1"),
        ("run", "c1"),
        ("delete", "c1"),
        ("kill", "c1 KILL"),
        ("kill", "c1 9"),
        ("kill", "c1"),
        ("state", "c1"),
        ("exec", "c1"),
        ("exec", "c1 /bin/sh -c true"),
    ];

    /// Every vector the engines' spellings make: each flag alone in each
    /// spelling before and after the positionals, each global before and
    /// after the verb, and all flags at once in both orders.
    fn engine_vectors() -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (verb_name, positionals) in VERBS {
            let verb = Verb::named(verb_name).expect("a fast verb");
            let positionals = words(positionals);
            // Flags after exec's command would belong to it: after the id.
            let split = if verb == Verb::Exec {
                1
            } else {
                positionals.len()
            };
            let (head, tail) = positionals.split_at(split);
            let own: Vec<&Flag> = verb.flags().iter().copied().flatten().collect();
            for flag in &own {
                for spelled in spellings(flag, value_of(flag.key)) {
                    let before = [&[verb_name.to_string()][..], &spelled, head, tail].concat();
                    let after = [&[verb_name.to_string()][..], head, &spelled, tail].concat();
                    out.push(before);
                    out.push(after);
                }
            }
            for flag in GLOBAL {
                for spelled in spellings(flag, value_of(flag.key)) {
                    let verb_word = [verb_name.to_string()];
                    out.push([&spelled[..], &verb_word, &positionals].concat());
                    out.push([&verb_word[..], &spelled, &positionals].concat());
                }
            }
            let all: Vec<Vec<String>> = own
                .iter()
                .map(|f| spellings(f, value_of(f.key)).swap_remove(0))
                .chain(
                    GLOBAL
                        .iter()
                        .map(|f| spellings(f, value_of(f.key)).pop().expect("a spelling")),
                )
                .collect();
            let globals = words("--root /r --log /l.json --log-format=json --debug");
            let reversed = all.iter().rev().cloned().collect::<Vec<_>>();
            for flags in [all.concat(), reversed.concat()] {
                out.push([&[verb_name.to_string()][..], &flags, &positionals].concat());
            }
            out.push([&globals[..], &[verb_name.to_string()], &positionals].concat());
            out.push([&[verb_name.to_string()][..], &positionals].concat());
        }
        // What the engines send (BRIEF.md: podman, docker's containerd shim).
        for line in [
            "--log /l.json --log-format=json create --bundle /b --pid-file /p c1",
            "--log=/l.json --log-format json --systemd-cgroup create --bundle /b --pid-file /p --console-socket /s c1",
            "--root /r --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid c1",
            "--root /r --log /b/log.json --log-format json start c1",
            "--root /r --log /b/log.json --log-format json delete c1",
            "--root /r --log /b/log.json --log-format json delete --force c1",
            "--root /r --log /b/log.json --log-format json kill c1 15",
            "--root /r --log /b/log.json --log-format json kill --all c1 9",
            "--root /r --log /b/log.json --log-format json exec --process /t/p.json --detach --pid-file /t/e.pid c1",
            "--root /r exec --pid-file /p --process /p.json --detach --tty --console-socket /s c1",
            "--root /r state c1",
            // berth's own shim (shim/src/task).
            "--root /r --log /b/log.json --log-format json run --detach --bundle /b --pid-file /b/init.pid --no-pivot --no-new-keyring c1",
            "--root /r --log /b/log.json --log-format json exec --detach --process /b/e.json --pid-file /b/e.pid --tty --console-socket /s c1",
            "--root /r run --bundle /b -d --keep c1",
            "--root /r run -b /b c1",
            "exec -e A=1 -e B=2 --env=C=3 -c CAP_KILL --cap CAP_CHOWN -g 1 -g 2 c1 sh -c 'x'",
            "exec --cgroup a --cgroup=cpu:b c1 sh",
            "exec -t c1 sh --tty -e X",
            "exec c1 --tty sh",
            "exec c1 -t sh -- x",
            "kill c1 SIGKILL --all",
            "create c1 --bundle /b",
            "create --preserve-fds 0 c1",
            "create --preserve-fds=4294967295 c1",
            "create --preserve-fds 007 c1",
            "--rootless --debug create c1",
            "create c1 --rootless",
            "--rootless=true create c1",
        ] {
            out.push(words(line));
        }
        out
    }

    #[test]
    fn takes_what_engines_send_as_clap_does() {
        let vectors = engine_vectors();
        assert!(vectors.len() > 300, "{}", vectors.len());
        for args in &vectors {
            assert!(taken(args), "declined {args:?}");
        }
    }

    /// Vectors one edit away from an engine's: a word dropped, repeated,
    /// or swapped with the next. Whatever of them the fast parser takes,
    /// clap takes alike; everything clap refuses, it declines.
    #[test]
    fn near_misses_are_taken_alike_or_declined() {
        let mut seen = 0;
        let mut declined = 0;
        for args in engine_vectors() {
            for i in 0..args.len() {
                let mut dropped = args.clone();
                dropped.remove(i);
                let mut repeated = args.clone();
                repeated.insert(i, args[i].clone());
                let mut swapped = args.clone();
                if i + 1 < args.len() {
                    swapped.swap(i, i + 1);
                }
                for v in [dropped, repeated, swapped] {
                    seen += 1;
                    declined += usize::from(!taken(&v));
                }
            }
        }
        assert!(
            seen > 3000 && declined > 500,
            "{seen} tried, {declined} declined"
        );
    }

    /// What clap refuses or answers itself (help, version, a verb taken
    /// elsewhere, no verb) goes to clap.
    #[test]
    fn declines_what_clap_rejects_or_treats_specially() {
        let clap_errors = [
            "",
            "--help",
            "-h",
            "help",
            "help create",
            "create --help",
            "exec -h c1",
            "create",
            "create c1 c2",
            "start",
            "start c1 c2",
            "kill c1 9 x",
            "kill c1 -9",
            "delete -f",
            "create --bundle",
            "create c1 --bundle",
            "create --bundle= c1",
            "create --pid-file= c1",
            "create --bundle --pid-file /p c1",
            "create --preserve-fds x c1",
            "create --preserve-fds=-1 c1",
            "create --preserve-fds 4294967296 c1",
            "create --no-pivot=true c1",
            "create --no-pivot --no-pivot c1",
            "create --bundle /a --bundle /b c1",
            "--root /a --root /b create c1",
            "create --bogus c1",
            "create -x c1",
            "create -d c1",
            "create --detach c1",
            "create --bund /b c1",
            "delete --all c1",
            "start --force c1",
            "--bundle /b create c1",
            "-b /b create c1",
            "exec -g x c1",
            "--debug=true create c1",
            "--rootless create",
            "frobnicate c1",
        ];
        let special = [
            "--version",
            "-v",
            "--root /r",
            "--debug",
            "list",
            "ps c1",
            "spec",
            "features",
            "pause c1",
            "resume c1",
            "update --memory 1m c1",
            "events c1",
            "ps-all",
            "--rootless false create c1",
            "--rootless create c1 -- x",
            "exec c1 -- sh",
            "exec c1 --bogus",
            "--rootless create c1",
            "--root /a create --root /b c1",
            "create -- c1",
            "create -b=/b c1",
            "create -bb c1",
            "exec -dt c1",
            "create -b/b c1",
            "create --bundle=-x c1",
            "--log-format= create c1",
        ];
        for line in clap_errors.iter().chain(&special) {
            let args = if line.is_empty() { vec![] } else { words(line) };
            assert!(!taken(&args), "took {args:?}");
        }
        let clap_took: Vec<&str> = clap_errors
            .iter()
            .copied()
            .filter(|line| {
                let args = if line.is_empty() { vec![] } else { words(line) };
                let clap = Cli::try_parse_from(vector(&args));
                clap.is_ok_and(|cli| cli.command.is_some())
            })
            .collect();
        assert!(clap_took.is_empty(), "clap took {clap_took:?}");
        let not_utf8 = vec![
            OsString::from("berth"),
            OsString::from("start"),
            OsString::from_vec(vec![b'c', 0xff]),
        ];
        assert!(parse(not_utf8).is_none());
    }
}
