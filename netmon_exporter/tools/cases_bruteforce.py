"""Login services under ordinary load (benign) and under evasive password guessing (hard).

Sessions are written as the protocols run them, step by step: TCP handshake, the
server's banner, TLS or SSH key exchange, the login, what follows, the close. Sizes
are those of real implementations (an SSH KEXINIT is about 1.4 KB from OpenSSH's
client, a TLS server flight with a certificate chain about 4 KB, a failed SSH
password about 100 bytes up and 60 down) with per-session variation where real
sessions vary (usernames, mailbox contents, messages).

* benign ``mail_filter_relay``: a cloud mail filter delivers inbound mail to the
  site's SMTP server, one message every 12 s on average (STARTTLS, EHLO, MAIL,
  RCPT, DATA, a message of a few KB, QUIT);
* benign ``nat_mail_users``: 30 users behind one NAT address poll IMAPS (logins that
  work, then mailbox data: larger, varied responses), a few keep IDLE sessions, and
  some submit mail on 587;
* benign ``ipv6_lan_mail_users``: the same users on a NAT-less IPv6 LAN, each host
  with its own (privacy) address of the site's /64, some taking a new one mid-way,
  polling their provider's IMAPS server outside; ``lan_mail_users``: the same on the
  site's IPv4 LAN, seen inside the NAT (each host its own private address). Each
  client polls on a timer, and each pair alone would be a beacon: the beacon
  detector's prevalence rule keeps them quiet;
* benign ``ci_git_polling_over_ssh``: a CI server polling eight repositories on the
  site's git server over SSH every minute (a key login and a ref advertisement each);
  ``nagios_check_by_ssh``: a monitoring server running five checks on each of 12 hosts
  through check_by_ssh every 5 minutes, a key login per check. In sizes each session is
  what a failed password looks like; what differs is the failure delay it lacks;
* hard: SSH guessing at one attempt per 30 s, six passwords per connection (over
  the old 40-packet cap), 40 sources at one attempt a minute each against one
  server, SMTP AUTH guessing over STARTTLS on 587, and SSH guessing at one attempt
  per 30 s, each from a new address of one IPv6 /64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .scenarios import SPOOFED, Truth, _Capture, _outsider, _Site
from .suites import CaseFn, Sweep, case, sweep

Step = tuple[str, int, float]  # (who sends: "c" client or "s" server, bytes, seconds before)


def exchange_session(
    cap: _Capture,
    t: float,
    client: str,
    server: str,
    dport: int,
    steps: Sequence[Step],
    rtt: float = 0.03,
    sport: int | None = None,
    server_closes: bool = False,
) -> float:
    """Write one TCP connection: handshake, ``steps`` of data, FIN close; return its end.

    Each step's bytes go in segments of at most 1,400 bytes; the receiver acknowledges
    every second segment and the last one, half an RTT later.
    """
    rng = cap.rng
    sport = sport or int(rng.integers(32768, 61000))
    seq = {"c": int(rng.integers(1, 2**31)), "s": int(rng.integers(1, 2**31))}
    ends = {"c": (client, sport), "s": (server, dport)}
    cap.tcp(t, client, server, sport, dport, "S", seq["c"])
    cap.tcp(t + rtt / 2, server, client, dport, sport, "SA", seq["s"], seq["c"] + 1)
    t += rtt
    seq["c"] += 1
    seq["s"] += 1
    cap.tcp(t, client, server, sport, dport, "A", seq["c"], seq["s"])
    for who, size, gap in steps:
        other = "s" if who == "c" else "c"
        (a, ap), (b, bp) = ends[who], ends[other]
        t += max(gap, 0.0) + 0.0002
        left, segs = max(int(size), 1), 0
        while left > 0:
            n = min(left, 1400)
            last = n == left
            cap.tcp(t, a, b, ap, bp, "PA" if last else "A", seq[who], seq[other], bytes(n))
            seq[who] += n
            left -= n
            segs += 1
            if segs % 2 == 0 or last:
                cap.tcp(t + rtt / 2, b, a, bp, ap, "A", seq[other], seq[who])
            t += 0.0003
        t += rtt / 2
    closer, other = ("s", "c") if server_closes else ("c", "s")
    (a, ap), (b, bp) = ends[closer], ends[other]
    t += 0.005
    cap.tcp(t, a, b, ap, bp, "FA", seq[closer], seq[other])
    cap.tcp(t + rtt / 2, b, a, bp, ap, "FA", seq[other], seq[closer] + 1)
    cap.tcp(t + rtt, a, b, ap, bp, "A", seq[closer] + 1, seq[other] + 1)
    return t + rtt


def _ssh_login(
    rng: np.random.Generator, passwords: int, success: bool = False, client_kex: int = 1420
) -> list[Step]:
    """An OpenSSH password login: versions, key exchange, ``passwords`` tries."""
    rtt_work = float(rng.uniform(0.002, 0.01))
    steps: list[Step] = [
        ("s", 41, 0.0),  # SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13
        ("c", 33, 0.001),
        ("c", client_kex, 0.0),  # KEXINIT
        ("s", 1080, 0.0),
        ("c", 48, 0.0),  # ECDH init
        ("s", 580 + int(rng.integers(0, 3)) * 8, rtt_work),  # reply, host key, signature
        ("c", 16, 0.0),  # NEWKEYS
        ("c", 52, 0.0),  # SERVICE_REQUEST
        ("s", 52, 0.0),
    ]
    for i in range(passwords):
        steps.append(("c", 116 + 8 * int(rng.integers(0, 3)), 0.05 + float(rng.exponential(0.2))))
        if success and i == passwords - 1:
            steps.append(("s", 28, 0.01))
        else:
            steps.append(("s", 60, float(rng.uniform(1.5, 3.0))))  # sshd's failure delay
    return steps


def _tls_client_hello(rng: np.random.Generator, kind: int) -> int:
    """ClientHello sizes differ by client software (extensions, key shares, SNI)."""
    return (517, 583, 646, 259)[kind % 4] + int(rng.integers(0, 4)) * 2


def _message_size(rng: np.random.Generator) -> int:
    """A message of a few KB, as a relay sees them: lognormal, heavy-tailed."""
    return int(min(max(rng.lognormal(np.log(4500), 0.9), 900), 400_000))


def _privacy_address(rng: np.random.Generator, prefix: str) -> str:
    """A random interface id in ``prefix`` (``"2001:db8:1:2"`` for its /64): RFC 8981."""
    return prefix + ":" + ":".join(f"{int(x):x}" for x in rng.integers(0, 0x10000, 4))


# ----------------------------------------------------------------------------- benign


@case("benign", "mail_filter_relay")
def mail_filter_relay(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A mail filter relays inbound mail to the site's SMTP server, one message every 12 s."""
    rng = cap.rng
    relays = [_outsider(rng) for _ in range(2)]  # one provider, two outbound addresses
    cert = int(rng.integers(3600, 4800))
    t = start + float(rng.exponential(12.0))
    while t < start + duration - 10:
        relay = str(rng.choice(relays))
        tls = rng.random() < 0.5  # STARTTLS when both ends offer it
        steps: list[Step] = [("s", 68, 0.0), ("c", 26, 0.01), ("s", 182, 0.0)]
        if tls:
            steps += [
                ("c", 10, 0.0),
                ("s", 30, 0.0),
                ("c", _tls_client_hello(rng, 0), 0.0),
                ("s", cert + int(rng.integers(0, 200)), 0.002),
                ("c", 126, 0.0),
                ("s", 250, 0.0),
                ("c", 48, 0.0),  # EHLO again, inside TLS
                ("s", 170, 0.0),
            ]
        for _ in range(1 if rng.random() < 0.85 else int(rng.integers(2, 4))):
            rcpt = int(rng.integers(1, 4))
            # ESMTP PIPELINING: MAIL, RCPT(s) and DATA in one segment, the replies in one
            steps += [("c", 60 + 45 * rcpt + 6, 0.0), ("s", 30 * (rcpt + 1) + 50, 0.005)]
            steps += [("c", _message_size(rng), 0.0), ("s", 72, 0.05)]  # message / 250 queued
        steps += [("c", 28, 0.0), ("s", 45, 0.0)]  # QUIT / 221
        exchange_session(cap, t, relay, site.mail_server, 25, steps, rtt=0.02 + rng.random() * 0.03)
        t += float(rng.exponential(12.0))
    return ()


def _imap_poll(rng: np.random.Generator, kind: int, resumed: bool, cert: int) -> list[Step]:
    """An IMAPS poll that logs in: TLS, CAPABILITY, LOGIN, SELECT, maybe FETCH, LOGOUT."""
    steps: list[Step] = [("c", _tls_client_hello(rng, kind), 0.0)]
    steps += [("s", 230 if resumed else cert, 0.002), ("c", 80 if resumed else 126, 0.0)]
    steps += [("s", 110, 0.0)]  # greeting
    steps += [
        ("c", 40 + int(rng.integers(0, 30)), 0.0),
        ("s", 190 + int(rng.integers(0, 90)), 0.01),
    ]
    steps += [("c", 22, 0.0), ("s", 280 + int(rng.integers(0, 400)), 0.003)]  # SELECT INBOX
    if rng.random() < 0.55:  # new mail: headers, then often the bodies
        steps += [("c", 60, 0.0), ("s", int(rng.integers(1500, 9000)), 0.01)]
        if rng.random() < 0.7:
            steps += [("c", 50, 0.0), ("s", _message_size(rng) * int(rng.integers(1, 6)), 0.02)]
    for _ in range(int(rng.integers(0, 4))):  # STATUS of other folders
        steps += [("c", 45, 0.0), ("s", 90 + int(rng.integers(0, 40)), 0.002)]
    steps += [("c", 14, 0.0), ("s", 60, 0.0)]  # LOGOUT
    return steps


@case("benign", "nat_mail_users")
def nat_mail_users(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """30 users behind one NAT address poll IMAPS, hold IDLE sessions and submit mail."""
    nat = _outsider(cap.rng)
    mail_users(cap, start, duration, lambda user, t: nat, site.mail_server)
    return ()


@case("benign", "ipv6_lan_mail_users")
def ipv6_lan_mail_users(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """30 hosts of an IPv6 LAN (no NAT) poll their provider's IMAPS and submit mail."""
    rng = cap.rng
    lan = site.clients[12].rsplit("::", 1)[0] + ":0:0"  # fd00:1::/64, written out
    hosts = [_privacy_address(rng, lan) for _ in range(30)]
    renewed = {u: _privacy_address(rng, lan) for u in range(30) if rng.random() < 0.3}
    switch = start + float(rng.uniform(0.3, 0.7)) * duration

    def address(user: int, t: float) -> str:
        return renewed[user] if user in renewed and t >= switch else hosts[user]

    server = f"2001:db8:{int(rng.integers(0x100, 0xFFF)):x}::993"
    mail_users(cap, start, duration, address, server)
    return ()


@case("benign", "lan_mail_users")
def lan_mail_users(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """30 hosts of the IPv4 LAN, seen inside the NAT (each its own private address),
    poll their provider's IMAPS and submit mail."""
    rng = cap.rng
    hosts = [
        f"{site.lan_prefix}{int(h)}" for h in rng.choice(np.arange(200, 255), 30, replace=False)
    ]
    mail_users(cap, start, duration, lambda user, t: hosts[user], _outsider(rng))
    return ()


def mail_users(
    cap: _Capture,
    start: float,
    duration: float,
    address: Callable[[int, float], str],
    server: str,
) -> None:
    """30 users poll IMAPS on ``server`` (every 2, 5 or 10 minutes, each on its own
    schedule), some hold IDLE sessions, some submit mail on 587; ``address(user, t)``
    is the address a user's session at ``t`` comes from."""
    rng = cap.rng
    cert = int(rng.integers(3600, 4800))
    for user in range(30):
        kind = int(rng.integers(0, 4))
        resumes = rng.random() < 0.5
        if user % 6 == 0:  # push clients: one IDLE session for the whole capture
            t = start + float(rng.uniform(0, 60))
            steps = _imap_poll(rng, kind, False, cert)[:-2]
            while t < start + duration - 60:
                gap = float(rng.uniform(240, 290))  # re-IDLE before the 29-minute limit
                steps += [("c", 10, gap), ("s", 30 + int(rng.integers(0, 200)), 0.01)]
                t += gap
            t = start + float(rng.uniform(0, 30))
            exchange_session(cap, t, address(user, t), server, 993, steps)
            continue
        period = float(rng.choice([120.0, 300.0, 600.0]))
        t = start + float(rng.uniform(0, period))
        while t < start + duration:
            steps = _imap_poll(rng, kind, bool(resumes and rng.random() < 0.8), cert)
            exchange_session(cap, t, address(user, t), server, 993, steps, rtt=0.03)
            t += period + float(rng.normal(0, 5))
        if rng.random() < 0.3:  # a message submitted on 587 (STARTTLS, AUTH, DATA)
            t = start + float(rng.uniform(0, duration - 30))
            steps = [("s", 70, 0.0), ("c", 24, 0.0), ("s", 160, 0.0), ("c", 10, 0.0)]
            steps += [("s", 30, 0.0), ("c", _tls_client_hello(rng, kind), 0.0), ("s", cert, 0.0)]
            steps += [("c", 126, 0.0), ("s", 250, 0.0), ("c", 60, 0.0), ("s", 40, 0.05)]
            steps += [("c", 50, 0.0), ("s", 30, 0.0), ("c", 40, 0.0), ("s", 30, 0.0)]
            steps += [("c", 10, 0.0), ("s", 50, 0.0), ("c", _message_size(rng) * 4, 0.0)]
            steps += [("s", 70, 0.1), ("c", 10, 0.0), ("s", 40, 0.0)]
            exchange_session(cap, t, address(user, t), server, 587, steps)


def _ssh_exec(rng: np.random.Generator, output: int, work: float) -> list[Step]:
    """An OpenSSH session that logs in with a key and runs one command: versions, key
    exchange, the public key offered and accepted (PK_OK, then the signature), a
    channel, ``exec``, ``output`` bytes back after ``work`` seconds, exit status, close."""
    steps: list[Step] = [
        ("s", 41, 0.0),
        ("c", 33, 0.001),
        ("c", 1420, 0.0),  # KEXINIT
        ("s", 1080, 0.0),
        ("c", 48, 0.0),  # ECDH init
        ("s", 580 + int(rng.integers(0, 3)) * 8, float(rng.uniform(0.002, 0.01))),
        ("c", 16, 0.0),  # NEWKEYS
        ("c", 52, 0.0),  # SERVICE_REQUEST
        ("s", 52, 0.0),
        ("c", 148, 0.0),  # USERAUTH_REQUEST, publickey, no signature
        ("s", 132, 0.002),  # PK_OK
        ("c", 244, 0.0),  # ... with the signature
        ("s", 28, 0.004),  # USERAUTH_SUCCESS
        ("c", 68, 0.0),  # CHANNEL_OPEN session
        ("s", 44, 0.001),  # OPEN_CONFIRMATION
        ("c", 116 + 8 * int(rng.integers(0, 4)), 0.0),  # exec "<command>"
        ("s", 44, 0.001),  # WINDOW_ADJUST, CHANNEL_SUCCESS
        ("s", 36 + output + (-output % 16), work),  # the output
        ("s", 148, 0.0),  # exit-status, EOF, CLOSE
        ("c", 68, 0.0),  # EOF, CLOSE
    ]
    return steps


@case("benign", "ci_git_polling_over_ssh")
def ci_git_polling_over_ssh(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A CI server polls eight repositories on the site's git server over SSH every
    minute (Jenkins' "H/1" SCM polling, each job at its own offset): a key login, then
    ``git-upload-pack`` advertises the repository's refs (the same each poll while
    nothing is pushed; a push now and then adds a few bytes) and the client hangs up.
    240 alike, short SSH sessions in 30 minutes from one source to one server."""
    rng = cap.rng
    ci = str(site.clients[3])
    refs = [int(rng.integers(300, 6000)) for _ in range(8)]
    for repo, size in enumerate(refs):
        t = start + float(rng.uniform(0, 60))
        while t < start + duration - 5:
            if rng.random() < 0.02:  # a push: one more branch or tag
                refs[repo] = size = size + int(rng.integers(50, 70))
            steps = _ssh_exec(rng, size, float(rng.uniform(0.02, 0.08)))
            steps += [("c", 36, 0.0)]  # the flush packet: nothing wanted
            exchange_session(cap, t, ci, site.ssh_server, 22, steps, rtt=0.002)
            t += 60.0 + float(rng.uniform(-0.5, 0.5))
    return ()


@case("benign", "nagios_check_by_ssh")
def nagios_check_by_ssh(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A monitoring server runs five checks on each of 12 LAN hosts through
    check_by_ssh (load, disk, processes, swap, users), each every 5 minutes (Nagios'
    default), one SSH login per check: 30 short key-login sessions per host in 30
    minutes, the outputs a line of perfdata each."""
    rng = cap.rng
    monitor = str(site.clients[5])
    hosts = [f"{site.lan_prefix}{int(h)}" for h in rng.choice(np.arange(2, 200), 12, replace=False)]
    outputs = (90, 140, 75, 80, 60)  # check_load, check_disk, check_procs, check_swap, check_users
    for host in hosts:
        for check, out in enumerate(outputs):
            t = start + float(rng.uniform(0, 300))
            while t < start + duration - 5:
                size = out + int(rng.integers(-6, 7))  # the values in the line vary
                work = (0.05, 0.4, 0.15, 0.02, 0.03)[check] * float(rng.uniform(0.7, 1.5))
                exchange_session(cap, t, monitor, host, 22, _ssh_exec(rng, size, work), rtt=0.001)
                t += 300.0 + float(rng.uniform(-2, 2))
    return ()


# ----------------------------------------------------------------------------- hard


def _guesser(rng: np.random.Generator, site: _Site) -> tuple[str, str]:
    attacker = _outsider(rng) if rng.random() < 0.7 else str(rng.choice(site.clients[1:12]))
    return attacker, site.ssh_server


def _ssh_guessing(
    cap: _Capture, attacker: str, server: str, times: np.ndarray, passwords: int
) -> None:
    rng = cap.rng
    for t in times:
        steps = _ssh_login(rng, passwords)
        exchange_session(cap, float(t), attacker, server, 22, steps, rtt=0.02 + rng.random() * 0.08)


@case("hard", "ssh_guessing_slow", duration=1200.0)
def ssh_guessing_slow(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """SSH password guessing at one attempt per 30 s (jittered) for 20 minutes."""
    rng = cap.rng
    attacker, server = _guesser(rng, site)
    t0 = start + float(rng.uniform(0, 60))
    times = t0 + np.cumsum(rng.uniform(25, 35, 40))
    _ssh_guessing(cap, attacker, server, times[times < start + duration - 20], passwords=1)
    return (Truth("brute_force", attacker, server),)


@case("hard", "ssh_guessing_six_passwords")
def ssh_guessing_six_passwords(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Hydra-style: four parallel tasks, six passwords per connection (about 42 packets)."""
    rng = cap.rng
    attacker, server = _guesser(rng, site)
    t0 = start + float(rng.uniform(0, duration * 0.6))
    times = np.concatenate([t0 + k * 2.0 + np.cumsum(rng.uniform(14, 20, 6)) for k in range(4)])
    _ssh_guessing(cap, attacker, server, np.sort(times), passwords=6)
    return (Truth("brute_force", attacker, server),)


@case("hard", "ssh_guessing_distributed")
def ssh_guessing_distributed(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """40 sources (a botnet) each try one password a minute against one SSH server."""
    rng = cap.rng
    server = site.ssh_server
    t0 = start + float(rng.uniform(0, duration * 0.3))
    for _ in range(40):
        bot = _outsider(rng)
        n = int(rng.integers(6, 10))
        times = t0 + float(rng.uniform(0, 60)) + 60.0 * np.arange(n) + rng.normal(0, 4, n)
        _ssh_guessing(cap, bot, server, times, passwords=1)
    return (Truth("brute_force", SPOOFED, server),)


@case("hard", "smtp_auth_guessing")
def smtp_auth_guessing(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """SMTP AUTH LOGIN guessing over STARTTLS on 587, one password per connection."""
    rng = cap.rng
    attacker = _outsider(rng)
    cert = int(rng.integers(3600, 4800))
    t = start + float(rng.uniform(0, duration * 0.5))
    for _ in range(int(rng.integers(25, 60))):
        steps: list[Step] = [("s", 70, 0.0), ("c", 24, 0.0), ("s", 160, 0.0), ("c", 10, 0.0)]
        steps += [("s", 30, 0.0), ("c", 517, 0.0), ("s", cert, 0.002), ("c", 126, 0.0)]
        steps += [("s", 250, 0.0), ("c", 48, 0.0), ("s", 170, 0.0)]
        steps += [("c", 12, 0.0), ("s", 18, 0.0), ("c", 24 + int(rng.integers(0, 12)), 0.0)]
        steps += [("s", 18, 0.0), ("c", 16 + int(rng.integers(0, 12)), 0.0)]
        steps += [("s", 44, float(rng.uniform(1.0, 3.0))), ("c", 10, 0.0), ("s", 40, 0.0)]
        t = exchange_session(cap, t, attacker, site.mail_server, 587, steps) + float(
            rng.exponential(4.0)
        )
    return (Truth("brute_force", attacker, site.mail_server),)


@case("hard", "ipv6_brute_force_rotating_sources_slow", duration=1200.0)
def ipv6_brute_force_rotating_sources_slow(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """SSH guessing at one attempt per 30 s (jittered), each from a new address of one
    IPv6 /64, against an IPv6 host, for 20 minutes."""
    rng = cap.rng
    victim = str(rng.choice(site.clients[12:]))
    prefix = f"2001:db8:{int(rng.integers(0x100, 0xFFF)):x}:{int(rng.integers(1, 0xFFFF)):x}"
    t0 = start + float(rng.uniform(0, 60))
    times = t0 + np.cumsum(rng.uniform(25, 35, 40))
    for t in times[times < start + duration - 20]:
        steps = _ssh_login(rng, 1)
        rtt = 0.02 + rng.random() * 0.08
        exchange_session(cap, float(t), _privacy_address(rng, prefix), victim, 22, steps, rtt)
    return (Truth("brute_force", f"{prefix}::/64", victim),)


def _guessing_at(per_minute: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker, server = _guesser(rng, site)
        gap = 60.0 / per_minute
        n = int(duration / gap)
        times = start + float(rng.uniform(0, gap)) + gap * np.arange(n)
        times = times + rng.uniform(-0.2, 0.2, n) * gap
        _ssh_guessing(cap, attacker, server, times[times < start + duration - 20], passwords=1)
        return (Truth("brute_force", attacker, server),)

    return build


sweep(
    Sweep(
        name="brute_force_rate",
        detector="brute_force",
        parameter="SSH attempts per minute, one source, for 30 minutes",
        values=(2.0, 1.5, 1.2, 1.0, 0.8, 0.5),
        make=_guessing_at,
        duration=1800.0,
    )
)


@case("benign", "outbound_mta")
def outbound_mta(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """The site's mail server delivering outbound mail (a busy company, or a newsletter
    run): about two messages a second, each to the MX of its recipient's domain (3,000
    across the internet); 3 % of MX hosts do not answer (down, firewalled: three SYNs,
    then the next MX of the domain) and 1 % refuse (a reset)."""
    rng = cap.rng
    mx = [_outsider(rng) for _ in range(3000)]
    cert = int(rng.integers(3600, 4800))
    t = start + float(rng.exponential(0.5))
    while t < start + duration - 20:
        for _ in range(3):  # the domain's MX hosts, by preference, until one takes it
            host = mx[int(rng.integers(0, len(mx)))]
            sport = int(rng.integers(32768, 61000))
            fate = rng.random()
            if fate < 0.03:  # no answer: the SYN and its retransmissions
                seq = int(rng.integers(1, 2**31))
                for back in (0.0, 1.0, 3.0):
                    cap.tcp(t + back, site.mail_server, host, sport, 25, "S", seq)
                t += 7.0
                continue
            if fate < 0.04:  # refused
                seq = int(rng.integers(1, 2**31))
                cap.tcp(t, site.mail_server, host, sport, 25, "S", seq)
                cap.tcp(t + 0.03, host, site.mail_server, 25, sport, "RA", 0, seq + 1)
                t += 0.05
                continue
            steps: list[Step] = [("s", 60 + int(rng.integers(0, 40)), 0.0), ("c", 30, 0.01)]
            steps += [("s", 150 + int(rng.integers(0, 80)), 0.0), ("c", 10, 0.0), ("s", 30, 0.0)]
            steps += [("c", _tls_client_hello(rng, 0), 0.0), ("s", cert, 0.002)]
            steps += [("c", 126, 0.0), ("s", 250, 0.0), ("c", 100, 0.0), ("s", 90, 0.005)]
            steps += [("c", _message_size(rng), 0.0), ("s", 60, 0.05), ("c", 28, 0.0)]
            exchange_session(cap, t, site.mail_server, host, 25, steps, sport=sport)
            break
        t += float(rng.exponential(0.5))
    return ()
