//! What a `ctr` command line means to the harness: the container id it creates (tracked for
//! leftovers) and where its stdio FIFOs go.

/// `args` with `--fifo-dir DIR` added to `run` and `tasks exec` (unless given), so ctr's
/// stdio FIFOs live in our directory, not /run/containerd/fifo, even if ctr is killed.
pub fn with_fifo_dir<'a>(args: &[&'a str], dir: &'a str) -> Vec<&'a str> {
    let sub = match args {
        ["run", ..] => 1,
        ["tasks" | "task" | "t", "exec", ..] => 2,
        _ => return args.to_vec(),
    };
    if args
        .iter()
        .any(|a| *a == "--fifo-dir" || a.starts_with("--fifo-dir="))
    {
        return args.to_vec();
    }
    let mut v = args[..sub].to_vec();
    v.extend(["--fifo-dir", dir]);
    v.extend_from_slice(&args[sub..]);
    v
}

/// The id of the container a `ctr run` / `ctr containers create` command creates: the second
/// positional argument after the flags (`[flags] IMAGE ID [CMD...]`).
pub fn created_id(args: &[&str]) -> Option<String> {
    let rest = match args {
        ["run", rest @ ..] => rest,
        ["containers" | "container" | "c", "create", rest @ ..] => rest,
        _ => return None,
    };
    // Boolean flags of ctr 1.6 `run`/`create`; every other flag takes a value.
    const BOOL: &[&str] = &[
        "rm",
        "null-io",
        "detach",
        "d",
        "cni",
        "runc-systemd-cgroup",
        "remap-labels",
        "net-host",
        "privileged",
        "read-only",
        "tty",
        "t",
        "seccomp",
        "rootfs",
        "no-pivot",
        "allow-new-privs",
    ];
    let mut positional = Vec::new();
    let mut i = 0;
    while i < rest.len() && positional.len() < 2 {
        let a = rest[i];
        if positional.is_empty() && a.starts_with('-') && a != "-" {
            let name = a.trim_start_matches('-');
            if !name.contains('=') && !BOOL.contains(&name) {
                i += 1; // the flag's value
            }
        } else {
            positional.push(a);
        }
        i += 1;
    }
    positional.get(1).map(|s| s.to_string())
}
