//! Standard output as Unix tools use it: when the reader goes away (`quipu consume … | head`),
//! a command ends quietly with success instead of panicking on the broken pipe.

use std::io::Write;

/// Writes one line to standard output; see [`line`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes one line to standard output. If the reader went away, the process ends at once with
/// success (nothing it would still print can be read); any other write error ends it with a
/// one-line error.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        gone(&e);
    }
}

/// Ends the process after a failed write to standard output.
pub fn gone(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}

/// Whether `error` is, at its root, a write to a reader that went away.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        // JSON output writes through serde_json, which wraps the I/O error in its own.
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}
