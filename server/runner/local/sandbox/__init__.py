"""The sandbox of the local runner's workers (bubblewrap's `bwrap`): what a simulation's
processes cannot see of this host.

A worker, and the simulator it starts, run as this server's account on input files a user
wrote. Without a sandbox, a simulator that can be made to read a file its input names (and to
echo it into its output, which the user gets back as a log) reads whatever this account can:
the token signing secret, the embedded database's files and socket, other users' job
directories, the configuration. In the sandbox they see the host's files read-only, except:

- their own job directory, read-write at its own path, and a private /tmp (a small tmpfs);
- the data directory, `runner.work_dir`, PostgreSQL's socket directories (socket_dirs),
  `~/.ssh`: empty;
  the configuration file, the clusters' SSH key files, libpq's password and service files
  (`~/.pgpass`, `~/.pg_service.conf`, `$PGPASSFILE`, `$PGSERVICEFILE`) and the SSH agent's
  socket: unreadable (EACCES: /dev/null in their place, on a mount without devices);
- this project, the Python running it, and the directories of the worker command, the
  converter and the simulators stay visible (read-only) when they are under /tmp;
- processes: their own only (a PID namespace), so neither the server's environment nor another
  worker's (its update key); they run as an unprivileged user of a user namespace of their own
  (mapped to this account), with no capabilities, so they cannot undo any of this.

A server run as root would map that user to root, the owner of /etc/shadow, SSH host keys and
root's own files. So under root, bwrap sets the sandbox up with root's privileges and the
processes then run (setpriv) as a user and group of their job's own, with no capabilities
(jobusers.py), in a second bwrap of that user's own that forbids them user namespaces. Where
that cannot work (no setpriv), the sandbox maps to root as before, and the start says so.

A filter of system calls (syscalls.py) keeps them from the parts of the kernel they have no
use for. They reach the server over the host's network, as before, and are killed when the
server ends (`--die-with-parent`). `runner.sandbox`: "auto" (the default) sandboxes when bwrap
works on this host and warns once at start when it does not; "on" refuses to start the runner
without it; "off" runs workers as plain processes.

The modules: lines.py makes each task's command line, probe.py finds at the start which of
these parts work on this host, jobusers.py and syscalls.py are the two named above.
"""
