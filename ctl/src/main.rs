//! `berthctl`: the command line a person uses to run containers with berth.
//! It is a pure gRPC client of `berth-imaged` (API: `proto/berth/v1/`),
//! with the commands and flags of docker's CLI, so that
//!
//! ```text
//! berthctl load -i busybox.tar
//! berthctl run --rm -it --memory 64m -v /srv:/srv:ro busybox sh
//! ```
//!
//! do what a docker user expects, and exit with the container's status.
//!
//! Where to start reading: [`cli`] lists every command and flag; `main`
//! below sends each to its module: [`images`] (pull, load, save, mount),
//! [`containers`] (create, run, exec, logs, stop, …), whose `run` shows the
//! order of calls (create → attach → start → stream → exit → rm), and
//! [`attach`] + [`terminal`] for a process's stdio and the local terminal;
//! [`copy`] for `cp` and `export` (tar streams to and from a container).
//! [`flags`] checks values like `--memory 64m`; [`client`] makes
//! connection failures say how to start the daemon; [`exit`] has docker's
//! exit codes (125, 126, 127, else the container's).

mod attach;
mod build;
mod changes;
mod cli;
mod client;
mod containers;
mod copy;
mod distribution;
mod exit;
mod flags;
mod images;
mod networks;
mod output;
mod progress;
mod system;
mod template;
mod terminal;
mod top;
mod volumes;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, ImageCommand};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::FAILED } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILED);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berthctl: {e:#}");
            exit::code_of(&e)
        }
    };
    // Not a return: a thread still blocked reading stdin must not keep
    // the process alive, and the runtime need not be torn down.
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    // Commands that need no daemon.
    match &cli.command {
        Command::Logout(a) => return distribution::logout(a),
        Command::Completion(a) => {
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "berthctl",
                &mut std::io::stdout(),
            );
            return Ok(0);
        }
        Command::Version(f) => {
            // The client's version even when the daemon is down, then the error.
            return match client::connect(&cli.address).await {
                Ok(d) => system::version(Some(&d), f.format).await,
                Err(e) => {
                    system::version(None, f.format).await?;
                    Err(e)
                }
            };
        }
        _ => {}
    }
    // Bad flag values are reported before the daemon is asked anything.
    if let Command::Run(cli::Lazy(cli::RunArgs { container, .. }))
    | Command::Create(cli::Lazy(cli::CreateArgs { container })) = &cli.command
    {
        containers::config(container)?;
    }
    let d = client::connect(&cli.address).await?;
    let ok = |done: bool| i32::from(!done);
    match cli.command {
        Command::Build(a) => build::build(&d, &a).await,
        Command::Tag(a) => distribution::tag(&d, &a).await,
        Command::Commit(a) => changes::commit(&d, &a).await,
        Command::Diff(a) => changes::diff(&d, &a).await,
        Command::Wait(a) => changes::wait(&d, &a).await,
        Command::Cp(a) => copy::cp(&d, &a).await,
        Command::Export(a) => copy::export(&d, &a).await,
        Command::Import(a) => changes::import(&d, &a).await,
        Command::Rename(a) => changes::rename(&d, &a).await,
        Command::Attach(a) => containers::attach(&d, &a).await,
        Command::Top(a) => top::top(&d, &a).await,
        Command::History(a) => distribution::history(&d, &a).await,
        Command::Push(a) => distribution::push(&d, &a).await,
        Command::Login(a) => distribution::login(&d, &a).await,
        Command::Search(a) => distribution::search(&d, &a).await,
        Command::Pull(a) => images::pull(&d, &a).await.map(|()| 0),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            images::list(&d, &a).await.map(|()| 0)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => {
            images::remove(&d, &a.images).await.map(ok)
        }
        Command::Image(ImageCommand::Mount(a)) => images::mount(&d, &a).await.map(|()| 0),
        Command::Image(ImageCommand::Unmount(a)) => images::unmount(&d, &a).await.map(|()| 0),
        Command::Image(ImageCommand::Inspect(a)) => {
            let args = cli::InspectArgs {
                names: a.names,
                kind: Some(cli::InspectKind::Image),
                format: None,
            };
            system::inspect(&d, &args).await
        }
        Command::Save(a) => images::save(&d, &a).await.map(|()| 0),
        Command::Load(a) => images::load(&d, &a).await.map(|()| 0),
        Command::Volume(v) => volumes::run(&d, &v).await,
        Command::Network(n) => networks::run(&d, &n).await,
        Command::Port(a) => networks::port(&d, &a).await,
        Command::Inspect(a) => system::inspect(&d, &a).await,
        Command::Run(a) => containers::run(&d, &a).await,
        Command::Create(a) => containers::create(&d, &a.container).await,
        Command::Start(a) => containers::start(&d, &a).await,
        Command::Ps(a) => containers::ps(&d, &a).await,
        Command::Exec(a) => containers::exec(&d, &a).await,
        Command::Logs(a) => containers::logs(&d, &a).await,
        Command::Stop(a) => containers::stop(&d, &a).await,
        Command::Kill(a) => containers::kill(&d, &a).await,
        Command::Rm(a) => containers::rm(&d, &a).await,
        Command::Pause(a) => containers::pause(&d, &a.containers, false).await,
        Command::Unpause(a) => containers::pause(&d, &a.containers, true).await,
        Command::Stats(a) => containers::stats(&d, &a).await,
        Command::Events(a) => system::events(&d, &a).await,
        Command::Info(f) => system::info(&d, f.format).await,
        Command::Version(_) | Command::Completion(_) | Command::Logout(_) => Ok(0),
    }
}
