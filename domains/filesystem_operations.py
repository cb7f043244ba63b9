"""filesystem_operations: POSIX behaviour of the filesystem under test, verified by checksums
computed on the host over bytes the host generated."""

from __future__ import annotations

import asyncio
import hashlib
import random

from vexfs_cockpit import TestResult, errno_problem, failed, option, q, test_options, verdict

from domains._common import DEFAULT_MNT, ModuleDomain

UNPRIVILEGED = "tester"


class FilesystemOperationsDomain(ModuleDomain):
    """POSIX file, directory, permission and error semantics on the mounted filesystem."""

    async def after_setup(self) -> bool:
        # Tests as the unprivileged user need a world-writable place of their own.
        await self.target.run(f"mkdir -p {q(self.mnt)}/shared && chmod 1777 {q(self.mnt)}/shared", check=True)
        return True

    @property
    def mnt(self) -> str:
        return self.m.mountpoint

    async def _sha(self, path: str) -> str:
        res = await self.target.run(["sha256sum", path], check=True)
        return res.output.split()[0]

    async def _as_user(self, cmd: str):
        return await self.target.run(["su", "-s", "/bin/sh", UNPRIVILEGED, "-c", cmd])

    @test_options(priority=0)
    async def test_mount_unmount(self) -> TestResult:
        problems = []
        mp = f"{DEFAULT_MNT}-mu"
        opts = str(option(self, "mount_options", ""))
        m = await self.mod.mount(mp, opts)
        line = await self.target.run(f"grep -F {q(' ' + mp + ' ')} /proc/mounts")
        if self.mod.fs_type not in line.output:
            problems.append(f"{mp} not in /proc/mounts as {self.mod.fs_type}")
        ro = await self.target.run(["mount", "-o", "remount,ro", mp])
        if not ro.ok:
            problems.append(f"remount ro failed: {ro.first_line()}")
        else:
            flags = (await self.target.run(f"grep -F {q(' ' + mp + ' ')} /proc/mounts | cut -d' ' -f4")).output
            if not flags.startswith("ro"):
                problems.append(f"after remount,ro the mount flags are {flags.strip()!r}")
            w = await self.target.run(f"echo x > {q(mp)}/nope")
            if p := errno_problem(w, "EROFS", "write on ro mount"):
                problems.append(p)
            rw = await self.target.run(["mount", "-o", "remount,rw", mp])
            if not rw.ok:
                problems.append(f"remount rw failed: {rw.first_line()}")
        u = await self.mod.unmount(m)
        if not u.ok:
            problems.append(f"umount failed: {u.first_line()}")
        gone = await self.target.run(f"grep -qF {q(' ' + mp + ' ')} /proc/mounts")
        if gone.ok:
            problems.append(f"{mp} still mounted after umount")
        return verdict(problems, f"mount{' -o ' + opts if opts else ''}, remount ro (EROFS on write), remount rw, umount")

    @test_options(priority=10)
    async def test_file_read_write(self) -> TestResult:
        """Write, read back, seek-write, append and truncate; each step checked by sha256
        against the same edit applied on the host."""
        rng = random.Random(int(option(self, "seed", 1234)))
        size = int(option(self, "file_size_kb", 256)) * 1024
        data = bytearray(rng.randbytes(size))
        local = self.ctx.workdir / "rw.bin"
        local.write_bytes(data)
        path = f"{self.mnt}/rw.bin"
        await self.target.put(local, path)
        problems = []

        async def check(step: str) -> None:
            want = hashlib.sha256(data).hexdigest()
            got = await self._sha(path)
            if got != want:
                problems.append(f"{step}: sha256 {got[:12]} != expected {want[:12]}")

        await check("write")
        # Seek: overwrite 4 KiB at offset 12 KiB in place.
        patch = rng.randbytes(4096)
        (self.ctx.workdir / "patch.bin").write_bytes(patch)
        await self.target.put(self.ctx.workdir / "patch.bin", f"{self.mnt}/patch.bin")
        await self.target.run(f"dd if={q(self.mnt)}/patch.bin of={q(path)} bs=4096 seek=3 conv=notrunc 2>&1", check=True)
        data[12288:16384] = patch
        await check("seek+write")
        # Append.
        await self.target.run(f"cat {q(self.mnt)}/patch.bin >> {q(path)}", check=True)
        data += patch
        await check("append")
        # Truncate down, then up (the hole must read back as zeros).
        await self.target.run(["truncate", "-s", "10000", path], check=True)
        del data[10000:]
        await check("truncate down")
        await self.target.run(["truncate", "-s", "20000", path], check=True)
        data += bytes(10000)
        await check("truncate up")
        st = await self.target.run(["stat", "-c", "%s", path], check=True)
        if int(st.output.strip()) != len(data):
            problems.append(f"size {st.output.strip()} != {len(data)}")
        # Read back through get(): the bytes the host receives match what it expects.
        back = self.ctx.workdir / "back.bin"
        await self.target.get(path, back)
        if back.read_bytes() != bytes(data):
            problems.append("get() read back different bytes")
        await self.target.run(["rm", "-f", path, f"{self.mnt}/patch.bin"])
        return verdict(problems, f"write/seek/append/truncate on {size // 1024} KiB verified by sha256")

    @test_options(priority=20)
    async def test_directory_operations(self) -> TestResult:
        d = f"{self.mnt}/dirs"
        problems = []
        await self.target.run(["mkdir", d], check=True)
        await self.target.run(["mkdir", "-p", f"{d}/a/b/c/d"], check=True)
        ex = await self.target.run(["mkdir", f"{d}/a"])
        if p := errno_problem(ex, "EEXIST", "mkdir existing"):
            problems.append(p)
        ne = await self.target.run(["rmdir", f"{d}/a"])
        if p := errno_problem(ne, "ENOTEMPTY", "rmdir non-empty"):
            problems.append(p)
        names = [f"f{i:03d}" for i in range(50)]
        await self.target.run(f"cd {q(d)} && touch " + " ".join(names), check=True)
        ls = await self.target.run(["ls", d], check=True)
        listed = sorted(set(ls.output.split()) - {"a"})
        if listed != names:
            problems.append(f"listing shows {len(listed)} of {len(names)} files")
        mv = await self.target.run(["mv", f"{d}/f000", f"{d}/a/b/moved"])
        if not mv.ok or not (await self.target.run(["test", "-f", f"{d}/a/b/moved"])).ok:
            problems.append("rename into a nested directory failed")
        rm = await self.target.run(["rm", "-r", d])
        if not rm.ok:
            problems.append(f"recursive remove failed: {rm.first_line()}")
        return verdict(problems, "mkdir, nested mkdir, EEXIST, ENOTEMPTY, listing of 50, rename, rm -r")

    @test_options(priority=30)
    async def test_permissions(self) -> TestResult:
        problems = []
        secret = f"{self.mnt}/secret"
        await self.target.run(f"echo top > {q(secret)} && chmod 600 {q(secret)}", check=True)
        denied = await self._as_user(f"cat {q(secret)}")
        if p := errno_problem(denied, "EACCES", f"{UNPRIVILEGED} reading a 0600 root file"):
            problems.append(p)
        await self.target.run(["chmod", "644", secret], check=True)
        allowed = await self._as_user(f"cat {q(secret)}")
        if not allowed.ok or allowed.output.strip() != "top":
            problems.append(f"{UNPRIVILEGED} cannot read a 0644 file: {allowed.first_line()}")
        mine = f"{self.mnt}/shared/mine"
        made = await self._as_user(f"echo hi > {q(mine)} && stat -c %u {q(mine)}")
        if not made.ok or made.output.strip() != "1000":
            problems.append(f"file created by {UNPRIVILEGED} not owned by uid 1000: {made.output.strip()}")
        nowrite = await self._as_user(f"echo x > {q(self.mnt)}/not-yours")
        if nowrite.ok:
            problems.append(f"{UNPRIVILEGED} created a file in a root-owned 0755 directory")
        await self.target.run(["chmod", "000", secret], check=True)
        acc = await self._as_user(f"test -r {q(secret)}")
        if acc.ok:
            problems.append("access(R_OK) true on a 0000 file for an unprivileged user")
        await self.target.run(["rm", "-f", secret, mine])
        return verdict(problems, "EACCES on 0600/0000, read on 0644, owner uid on create, no write into 0755 root dir")

    @test_options(priority=40)
    async def test_metadata(self) -> TestResult:
        f = f"{self.mnt}/meta"
        problems = []
        await self.target.run(f"printf 'abcdef' > {q(f)} && chmod 640 {q(f)} && chown 1000:1000 {q(f)}", check=True)
        st = (await self.target.run(["stat", "-c", "%s %a %u %g %h", f], check=True)).output.split()
        if st != ["6", "640", "1000", "1000", "1"]:
            problems.append(f"stat size/mode/uid/gid/links = {' '.join(st)}, expected 6 640 1000 1000 1")
        await self.target.run(["touch", "-d", "2001-02-03 04:05:06", f], check=True)
        mtime = (await self.target.run(["stat", "-c", "%Y", f], check=True)).output.strip()
        mt_want = (await self.target.run(["date", "-d", "2001-02-03 04:05:06", "+%s"], check=True)).output.strip()
        if mtime != mt_want:
            problems.append(f"mtime after touch -d is {mtime}, expected {mt_want}")
        await self.target.run(f"echo more >> {q(f)}", check=True)
        mtime2 = int((await self.target.run(["stat", "-c", "%Y", f], check=True)).output.strip())
        if mtime2 <= int(mt_want):
            problems.append("mtime did not advance on write")
        await self.target.run(["mkdir", "-p", f"{self.mnt}/md/x", f"{self.mnt}/md/y"], check=True)
        links = (await self.target.run(["stat", "-c", "%h", f"{self.mnt}/md"], check=True)).output.strip()
        if links != "4":
            problems.append(f"directory with 2 subdirs has link count {links}, expected 4")
        sf = await self.target.run(["stat", "-f", "-c", "%b %f", self.mnt])
        if not sf.ok:
            problems.append(f"statfs failed: {sf.first_line()}")
        await self.target.run(["rm", "-rf", f, f"{self.mnt}/md"])
        return verdict(problems, "size, mode, owner, links, mtime set and advanced, statfs")

    @test_options(priority=45)
    async def test_hard_links_and_rename(self) -> TestResult:
        d = f"{self.mnt}/links"
        problems = []
        await self.target.run(f"mkdir -p {q(d)} && printf one > {q(d)}/a && printf two > {q(d)}/b", check=True)
        ln = await self.target.run(["ln", f"{d}/a", f"{d}/a2"])
        if not ln.ok:
            problems.append(f"hard link failed: {ln.first_line()}")
        else:
            links = (await self.target.run(["stat", "-c", "%h %i", f"{d}/a"], check=True)).output.split()
            other = (await self.target.run(["stat", "-c", "%i", f"{d}/a2"], check=True)).output.strip()
            if links[0] != "2" or links[1] != other:
                problems.append(f"after ln: links={links[0]} inode {links[1]} vs {other}")
            await self.target.run(f"printf ' more' >> {q(d)}/a2", check=True)
            if (seen := await self.target.run(["cat", f"{d}/a"])).output != "one more":
                problems.append(f"a write through one link is not visible through the other: read {seen.first_line()!r}")
        mv = await self.target.run(["mv", "-f", f"{d}/b", f"{d}/a"])
        if not mv.ok or (await self.target.run(["cat", f"{d}/a"])).output != "two":
            problems.append("rename over an existing file did not replace it")
        if (await self.target.run(["cat", f"{d}/a2"])).output != "one more":
            problems.append("the other link lost its data when its name was replaced")
        gone = await self.target.run(["test", "-e", f"{d}/b"])
        if gone.ok:
            problems.append("rename left the source name behind")
        await self.target.run(["rm", "-rf", d])
        return verdict(problems, "link count, shared data, rename-over replaces, other link survives")

    @test_options(priority=46)
    async def test_large_directory(self) -> TestResult:
        n = int(option(self, "large_dir_entries", 1000))
        d = f"{self.mnt}/big"
        await self.target.run(["mkdir", "-p", d], check=True)
        res = await self.target.run(f"cd {q(d)} && i=0; while [ $i -lt {n} ]; do : > e$i; i=$((i+1)); done", timeout=300)
        if not res.ok:
            return failed(f"creating {n} entries failed: {res.first_line()}")
        count = (await self.target.run(f"ls {q(d)} | wc -l", check=True)).output.strip()
        seen = (await self.target.run(f"ls {q(d)} | sort -u | wc -l", check=True)).output.strip()
        await self.target.run(["rm", "-rf", d], timeout=300)
        problems = []
        if count != str(n) or seen != str(n):
            problems.append(f"listing shows {count} entries ({seen} unique), expected {n}")
        return verdict(problems, f"{n} entries created, listed once each, removed", entries=float(n))

    @test_options(priority=47)
    async def test_sparse_files(self) -> TestResult:
        f = f"{self.mnt}/sparse"
        size = 1024 * 1024
        await self.target.run(["truncate", "-s", str(size), f], check=True)
        await self.target.run(f"printf TAIL | dd of={q(f)} bs=1 seek={size} conv=notrunc 2>/dev/null", check=True)
        want = hashlib.sha256(bytes(size) + b"TAIL").hexdigest()
        got = await self._sha(f)
        st = (await self.target.run(["stat", "-c", "%s", f], check=True)).output.strip()
        await self.target.run(["rm", "-f", f])
        problems = []
        if st != str(size + 4):
            problems.append(f"size {st}, expected {size + 4}")
        if got != want:
            problems.append("the hole does not read back as zeros followed by the tail")
        return verdict(problems, "1 MiB hole reads as zeros, tail written past it, size right")

    @test_options(priority=50)
    async def test_error_conditions(self) -> TestResult:
        problems = []
        ne = await self.target.run(["cat", f"{self.mnt}/does-not-exist"])
        if p := errno_problem(ne, "ENOENT", "reading a missing file"):
            problems.append(p)
        # ENOSPC: a small mount of its own (device-less) or the loop image, filled up.
        mp = f"{DEFAULT_MNT}-full"
        m = await self.mod.mount(mp, str(option(self, "enospc_mount_options", "")))
        fill = await self.target.run(f"dd if=/dev/zero of={q(mp)}/fill bs=64k 2>&1", timeout=300)
        if p := errno_problem(fill, "ENOSPC", "filling the filesystem"):
            problems.append(p)
        await self.target.run(["rm", "-f", f"{mp}/fill"])
        after = await self.target.run(f"echo ok > {q(mp)}/after && cat {q(mp)}/after")
        if after.output.strip() != "ok":
            problems.append(f"writing after freeing space failed: {after.first_line() or 'read back empty'}")
        await self.target.run(["mount", "-o", "remount,ro", mp], check=True)
        ro = await self.target.run(f"echo x > {q(mp)}/x")
        if p := errno_problem(ro, "EROFS", "write on a read-only mount"):
            problems.append(p)
        await self.mod.unmount(m)
        return verdict(problems, "ENOENT, ENOSPC (and recovery), EROFS")

    @test_options(priority=60)
    async def test_concurrent_operations(self) -> TestResult:
        workers = int(option(self, "concurrent_workers", 4))
        d = f"{self.mnt}/conc"
        await self.target.run(["mkdir", "-p", d], check=True)
        rng = random.Random(99)
        blobs = [rng.randbytes(64 * 1024) for _ in range(workers)]
        for i, b in enumerate(blobs):
            (self.ctx.workdir / f"c{i}.bin").write_bytes(b)

        async def worker(i: int) -> str | None:
            src = f"{d}/c{i}.bin"
            await self.target.put(self.ctx.workdir / f"c{i}.bin", src)
            r = await self.target.run(
                f"for n in 1 2 3 4 5; do cp {q(src)} {q(d)}/c{i}.$n && mkdir {q(d)}/dir{i}.$n; done; "
                f"cat {q(d)}/c{i}.* | sha256sum | cut -d' ' -f1"
            )
            want = hashlib.sha256(blobs[i] * 6).hexdigest()
            return None if r.ok and r.output.strip() == want else f"worker {i}: {r.first_line() or 'checksum mismatch'}"

        errors = [e for e in await asyncio.gather(*(worker(i) for i in range(workers))) if e]
        count = await self.target.run(f"ls {q(d)} | wc -l")
        if count.output.strip() != str(workers * 11):
            errors.append(f"{count.output.strip()} entries after concurrent creates, expected {workers * 11}")
        await self.target.run(["rm", "-rf", d])
        if errors:
            return failed("; ".join(errors[:2]))
        return verdict([], f"{workers} concurrent writers, copies and mkdirs, checksums match", workers=float(workers))
