#!/usr/bin/env python3
"""Runs every command block of docs/guide.md and compares what each command
prints with what the guide shows, by shape; checks that every section of
the openEuler guide is covered or says why not.

The blocks are ```console blocks: `$ COMMAND` lines (a trailing backslash
continues one), each followed by the output the guide shows. A tag after
`console` names what a block needs: `ovs` (Open vSwitch's programs: the
block is skipped, saying so, where they are missing, and fails then if
VMTOOLS_REQUIRE names ovs) or `linux` (a real Linux guest: such blocks
run in the Linux lane, not here; `--lane` writes them out for it). They run in
order, in one bash session in a scratch folder (state carries over, as for
a reader following the guide), with the tools on PATH and $GUEST naming
the test guest's kernel. Shapes:

- a JSON line matches JSON with the same keys, recursively (values may
  differ; an array matches by its first element);
- `...` matches any number of lines;
- a command may go on over lines ending in a backslash, and a
  here-document (`<<EOF`) takes the lines up to its delimiter;
- `[exit N]` as the last line: the command must exit with N (else 0);
- any other line matches a line equal to it once runs of digits are
  treated alike (sizes, ids, times differ from run to run).

Usage: run.py GUIDE BIN GUEST   (scripts/guide sets it up)
GUIDE_SHOW=1 prints what every command printed; GUIDE_FILL=1 writes it
into the guide for each command shown with only `...`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# The openEuler 20.03 guide's sections (chapter 3), each of which must be
# a heading in docs/guide.md with a command block or a "Not in vmtools"
# line under it.
SECTIONS = [
    "3.1.1", "3.1.2", "3.1.3",
    "3.2.2", "3.2.3", "3.2.4.1", "3.2.4.2", "3.2.4.3", "3.2.4.4", "3.2.5",
    "3.2.6", "3.2.7",
    "3.3.1", "3.3.2", "3.3.3", "3.3.4",
    "3.4.4",
    "3.5.1.1", "3.5.1.2", "3.5.1.3", "3.5.2.2", "3.5.2.3",
    "3.6.1", "3.6.2", "3.6.3", "3.6.4", "3.6.5", "3.6.6", "3.6.7",
    "3.7.1.1", "3.7.1.2", "3.7.1.3", "3.7.1.4", "3.7.1.5",
    "3.7.2.1", "3.7.2.2", "3.7.2.3",
]
NOT_YET = "**Not in vmtools yet:**"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def missing(tag):
    """Why a block with this tag cannot run here, or None."""
    if tag == "ovs":
        for prog in ("ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovsdb-tool"):
            if not shutil.which(prog):
                return f"{prog} is not installed (Debian: openvswitch-switch)"
        if not os.path.exists(OVS_SCHEMA):
            return f"{OVS_SCHEMA} is missing"
        return None
    if tag == "linux":
        return "needs a real Linux guest: the Linux lane runs it (scripts/linux-lane)"
    if tag:
        raise SystemExit(f"unknown block tag {tag!r}")
    return None


def parse(text):
    """The guide's sections (number -> body) and its command blocks, in
    order: each (section, tag, [(command, expected lines)])."""
    sections, blocks = {}, []
    current, body = None, []
    in_block, lines, tag = False, [], ""
    for at, line in enumerate(text.splitlines()):
        if not in_block:
            m = re.match(r"^#{2,5} (3(?:\.\d+)+) ", line)
            if m:
                if current:
                    sections[current] = "\n".join(body)
                current, body = m.group(1), []
                continue
            body.append(line)
            m = re.fullmatch(r"```console(?: (\w+))?", line.strip())
            if m:
                in_block, lines, tag = True, [], m.group(1) or ""
            continue
        body.append(line)
        if line.strip() == "```":
            in_block = False
            blocks.append((current, tag, commands(lines)))
        else:
            lines.append((at, line))
    if current:
        sections[current] = "\n".join(body)
    return sections, blocks


def commands(lines):
    """`lines`: (line number, text) pairs of one block."""
    out, cmd, expect, cont, until = [], None, [], False, None
    for at, line in lines:
        if until is not None:
            # A here-document's body, to its delimiter line.
            cmd += "\n" + line
            if line == until:
                until = None
            continue
        if cont:
            cmd += "\n" + line
            cont = line.endswith("\\")
            continue
        if line.startswith("$ "):
            if cmd is not None:
                out.append((cmd, expect))
            cmd, expect = line[2:], []
            cont = line.endswith("\\")
            here = re.search(r"<<-?'?(\w+)'?", line)
            if here:
                until = here.group(1)
            continue
        if cmd is None:
            raise SystemExit(f"output before any command: {line!r}")
        expect.append((at, line))
    if cmd is not None:
        out.append((cmd, expect))
    return out


def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return None


def same_shape(want, got):
    if isinstance(want, dict):
        return isinstance(got, dict) and want.keys() == got.keys() and all(
            same_shape(want[k], got[k]) for k in want
        )
    if isinstance(want, list):
        if not isinstance(got, list):
            return False
        return not want or not got or same_shape(want[0], got[0])
    return not isinstance(got, (dict, list))


def line_matches(want, got):
    if want[:1] in "{[" and want.strip():
        try:
            return same_shape(shape(json.loads(want)), shape(json.loads(got)))
        except ValueError:
            pass
    digits = re.compile(r"\d+")
    return digits.sub("0", want.rstrip()) == digits.sub("0", got.rstrip())


def matches(want, got):
    """Whether the lines `got` fit the pattern lines `want`."""
    if not want:
        return not got
    if want[0] == "...":
        return any(matches(want[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and line_matches(want[0], got[0]) and matches(want[1:], got[1:])


def steps_of(blocks, want_linux):
    """The commands to run: (section, command, expected lines with their
    line numbers), from the blocks tagged `linux` or from all the others;
    and the blocks skipped: tag -> (why, [section])."""
    steps, skipped = [], {}
    for section, tag, cmds in blocks:
        if (tag == "linux") != want_linux:
            if tag == "linux":
                skipped.setdefault(tag, (missing(tag), []))[1].append(section)
            continue
        why = None if want_linux else missing(tag)
        if why:
            skipped.setdefault(tag, (why, []))[1].append(section)
            continue
        steps.extend((section, cmd, expect) for cmd, expect in cmds)
    return steps, skipped


def expected_code(expect):
    """The exit code a command's expected lines ask for, and the lines
    without the `[exit N]` one."""
    if expect and re.fullmatch(r"\[exit \d+\]", expect[-1]):
        return int(expect[-1][6:-1]), expect[:-1]
    return 0, expect


def script_of(steps, work):
    """A POSIX shell script (bash here, busybox sh in the Linux lane) that
    runs the steps in order in `work`, framing each one's output. It
    exits 1 when a command's exit code is not the guide's."""
    script = ["exec </dev/null 2>&1", f'cd "{work}" || exit 2', "guide_failed=0"]
    for n, (_, cmd, expect_at) in enumerate(steps):
        want, _ = expected_code([line for _, line in expect_at])
        script.append(f"echo '@@guide-begin {n}'")
        script.append(cmd)
        # A newline first: the command's output may not end with one.
        script.append(f"rc=$?; printf '\\n@@guide-end {n} %d\\n' $rc")
        script.append(f"[ $rc = {want} ] || guide_failed=1")
    script.append("exit $guide_failed")
    return "\n".join(script) + "\n"


def outputs_of(out, shown):
    """Each step's printed lines and exit code from a script's output;
    `shown` maps the paths of this run to how the guide shows them."""
    got = {}
    for m in re.finditer(r"@@guide-begin (\d+)\n(.*?)@@guide-end \1 (\d+)\n", out, re.S):
        # A guest's tty ends lines with CR LF (and sometimes CR CR LF):
        # lines as a terminal shows them. A shell's terminal queries
        # (ESC [ 6 n after a prompt, say) show nothing either, and a read
        # that stops at the prompt may hold only their first byte.
        text = m.group(2).replace("\r", "")
        text = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z])?", "", text)
        for path, name in shown.items():
            text = text.replace(path, name)
        lines = text.splitlines()
        if lines and lines[-1] == "":
            lines.pop()
        got[int(m.group(1))] = (lines, int(m.group(3)))
    return got


def judge(steps, got, failures):
    """Compares what each step printed with the guide; returns, for
    GUIDE_FILL, the guide's line numbers of lone `...` lines and what the
    command printed."""
    fill = {}
    for n, (section, cmd, expect_at) in enumerate(steps):
        expect = [line for _, line in expect_at]
        if n in got and [l for l in expect if not l.startswith("[exit")] == ["..."]:
            fill[expect_at[0][0]] = got[n][0]
        if n not in got:
            failures.append(f"{section}: `{cmd}` did not finish")
            continue
        lines, code = got[n]
        if os.environ.get("GUIDE_SHOW"):
            print(f"$ {cmd}\n" + "".join(l + "\n" for l in lines) + f"[rc {code}]")
        want_code, expect = expected_code(expect)
        if code != want_code:
            failures.append(f"{section}: `{cmd}` exited {code}, the guide says {want_code}:\n"
                            + "\n".join(lines))
        elif not matches(expect, lines):
            failures.append(f"{section}: `{cmd}` printed\n" + "\n".join(lines)
                            + "\nwhere the guide shows\n" + "\n".join(expect))
    return fill


def fill_guide(guide, fill):
    """For whoever writes the guide: a command shown with only `...` gets
    what it printed in this run."""
    text = open(guide, encoding="utf-8").read().splitlines()
    for at in sorted(fill, reverse=True):
        text[at:at + 1] = [line.rstrip() for line in fill[at]]
    with open(guide, "w", encoding="utf-8") as f:
        f.write("\n".join(text) + "\n")


def report(what, steps, skipped, failures):
    for why, where in skipped.values():
        print(f"SKIP: blocks in {', '.join(sorted(set(where)))}: {why}")
    for f in failures:
        print("FAIL:", f)
    print(f"{what}: {len(steps)} commands, {len(failures)} failures")
    return 1 if failures else 0


# The Linux lane's paths (scripts/linux-lane puts them in L1), and how the
# guide shows them.
LANE_WORK = "/tmp/guide"
LANE_SHOWN = {LANE_WORK: "/srv/vm", "/lane/vmlinuz": "$LINUX",
              "/lane/l2.cpio.gz": "$INITRD", "/lane/guest.elf": "$GUEST"}


def lane(argv):
    """`--lane-script GUIDE OUT`: the `linux` blocks as a script for L1.
    `--lane-judge GUIDE OUTPUT`: judges what that script printed there."""
    mode, guide, path = argv
    _, blocks = parse(open(guide, encoding="utf-8").read())
    steps, _ = steps_of(blocks, want_linux=True)
    if mode == "--lane-script":
        with open(path, "w", encoding="utf-8") as f:
            f.write(script_of(steps, LANE_WORK))
        return 0
    out = open(path, "rb").read().decode(errors="replace")
    failures = []
    fill = judge(steps, outputs_of(out, LANE_SHOWN), failures)
    if os.environ.get("GUIDE_FILL"):
        fill_guide(guide, fill)
    return report("docs/guide.md, Linux blocks", steps, {}, failures)


def main():
    if sys.argv[1].startswith("--lane-"):
        return lane(sys.argv[1:4])
    guide, bindir, guest = sys.argv[1:4]
    sections, blocks = parse(open(guide, encoding="utf-8").read())
    failures = []
    for s in SECTIONS:
        body = sections.get(s)
        if body is None:
            failures.append(f"section {s} of the guide has no heading in {guide}")
        elif "```console" not in body and NOT_YET not in body:
            failures.append(f"section {s} has no command block and no '{NOT_YET}' line")
    steps, skipped = steps_of(blocks, want_linux=False)
    required = os.environ.get("VMTOOLS_REQUIRE", "").split(",")
    for tag, (why, where) in skipped.items():
        if tag != "linux" and tag in required:
            failures.append(f"{', '.join(where)}: {why}, and VMTOOLS_REQUIRE names {tag}")
    work = tempfile.mkdtemp(prefix="vmtools-guide.")
    env = dict(os.environ)
    env.update(
        PATH=bindir + ":" + env.get("PATH", ""),
        GUEST=guest,
        VMTOOLS_RUN_DIR=os.path.join(work, "run"),
        VMTOOLS_CONFIG_DIR=os.path.join(work, "defs"),
    )
    path = os.path.join(work, ".guide.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write(script_of(steps, work))
    try:
        # Into a file, not a pipe: daemons a block starts (OVS's) keep
        # the descriptor, and a pipe would not end while they run.
        log = os.path.join(work, ".guide.out")
        with open(log, "wb") as f:
            subprocess.run(["bash", "--noprofile", "--norc", path],
                           stdout=f, env=env, timeout=600, check=False)
        with open(log, "rb") as f:
            out = f.read().decode(errors="replace")
    finally:
        # Nothing the guide started may outlive it.
        subprocess.run(
            ["sh", "-c", f"for d in {work}/run/*/; do vm-run kill \"$(basename \"$d\")\"; done;"
             f" for p in {work}/ovs/*.pid; do [ -f \"$p\" ] && kill \"$(cat \"$p\")\"; done"],
            env=env, capture_output=True, check=False,
        )
    # The scratch folder and the guest's path differ from run to run: the
    # guide shows them as /srv/vm and $GUEST.
    fill = judge(steps, outputs_of(out, {guest: "$GUEST", work: "/srv/vm"}), failures)
    subprocess.run(["rm", "-rf", work], check=False)
    if os.environ.get("GUIDE_FILL"):
        fill_guide(guide, fill)
    print(f"docs/guide.md: {len(blocks)} blocks, {len(SECTIONS)} sections")
    return report("docs/guide.md", steps, skipped, failures)


if __name__ == "__main__":
    sys.exit(main())
