//! A plugin that misbehaves on demand, to test the host's limits.
//!
//! Configuration: `{"mode": "trap" | "loop" | "alloc" | "panic-init" | "ok"}`
//! (default `ok`).
//!
//! * `panic-init`: `init` panics (the instance traps).
//! * Otherwise `init` registers `check-event-for-spam`, which, by mode:
//!   `trap` executes `unreachable`; `loop` spins forever; `alloc` allocates
//!   1 MiB chunks (touching every byte) without bound; `ok` answers
//!   `not-spam`.

use std::{cell::Cell, hint::black_box};

use myelin_sdk::{Callback, Event, Plugin, SpamChecker, SpamVerdict};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Trap,
    Loop,
    Alloc,
    PanicInit,
    #[default]
    Ok,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    mode: Mode,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Ok) };
}

struct TestFaults;

impl Plugin for TestFaults {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let Config { mode } = myelin_sdk::parse_config(config)?;
        if let Mode::PanicInit = mode {
            panic!("test-faults: panic-init");
        }
        MODE.with(|m| m.set(mode));
        Ok(vec![Callback::CheckEventForSpam])
    }
}

impl SpamChecker for TestFaults {
    fn check_event_for_spam(_event: &Event) -> SpamVerdict {
        match MODE.with(Cell::get) {
            Mode::Trap => trap(),
            Mode::Loop => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                    black_box(&hoard);
                }
            }
            Mode::PanicInit | Mode::Ok => SpamVerdict::NotSpam,
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("test-faults: trap")
}

myelin_sdk::export_plugin!(TestFaults);
