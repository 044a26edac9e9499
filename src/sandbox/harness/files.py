# The harness's files (see common.py): a job's input files, written read-only into the working
# directory before the script's first line; the figures the script left open, saved as PNG into
# the output folder once main() has returned; and what the output folder then holds, gathered
# for the report. The supervisor checks every name, size and cap again (files/output.rs): user
# code shares this interpreter and could change anything here.

# The script's working directory, and the folder it leaves files in (files::OUTPUT_DIR).
_WORK_DIR = "/tmp"
_OUTPUT_DIR = "/tmp/output"
# files/output.rs: MAX_OUTPUT_FILES and MAX_OMITTED_NAMES.
_MAX_OUTPUT_FILES = 64
_MAX_OMITTED_NAMES = 64
_MAX_NAME_BYTES = 255


def _plain_name(name):
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogateescape")) <= _MAX_NAME_BYTES
    )


def _write_input_files(files):
    """Each input file (text as UTF-8, or base64) in the working directory, mode 0444: the
    script reads it, a write to it fails. Names were checked by the supervisor; a name or content
    that is not what it sends means the job was not its own, and nothing runs."""
    import binascii

    work = os.open(_WORK_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, content in files.items():
            if not _plain_name(name):
                _fail("sandbox_failure", f"The job's input file name {name!r} is not a plain file name")
            try:
                if isinstance(content, str):
                    data = content.encode("utf-8", "surrogatepass")
                elif isinstance(content, dict) and isinstance(content.get("base64"), str):
                    data = binascii.a2b_base64(content["base64"], strict_mode=True)
                else:
                    raise ValueError("neither text nor base64")
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444, dir_fd=work)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            except (OSError, ValueError, binascii.Error) as exc:
                _fail("sandbox_failure", f"The input file {name!r} could not be written: {exc}")
    finally:
        os.close(work)


def _save_figures():
    """The matplotlib figures left open, as output/figure-<number>.png, when matplotlib.pyplot
    was imported (by the script, or by the template that preloaded it); nothing is imported
    here. A file of the script's own of that name stays; a figure that cannot be saved is
    named on stderr and the run goes on."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        numbers = plt.get_fignums()
        if numbers:
            os.makedirs(_OUTPUT_DIR, exist_ok=True)
    except BaseException as exc:
        sys.stderr.write(f"pyexec: the open figures could not be saved: {_one_line(exc)}\n")
        return
    for number in numbers:
        try:
            with open(f"{_OUTPUT_DIR}/figure-{number}.png", "xb") as out:
                plt.figure(number).savefig(out, format="png")
        except FileExistsError:
            pass
        except BaseException as exc:
            sys.stderr.write(f"pyexec: figure {number} could not be saved as PNG: {_one_line(exc)}\n")


def _read_regular(fd, size):
    """At most `size` bytes of an open file: what it held when it was looked at."""
    parts = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _output_files():
    """What the output folder holds: (files, omitted). Only regular files directly in it come
    back, in name order, up to _MAX_OUTPUT_FILES of at most _OUT_BYTES in all; everything else
    (subfolders, symbolic links, which are never followed, other special files, names that are
    not UTF-8, files past a cap) is left out and named in `omitted` (at most _MAX_OMITTED_NAMES
    names; a folder's name ends with '/')."""
    import binascii
    import stat

    files = []
    omitted = []
    try:
        folder = os.open(_OUTPUT_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return files, omitted
    except OSError:
        # A symbolic link, or not a folder.
        return files, ["output"]

    def omit(name):
        if len(omitted) < _MAX_OMITTED_NAMES:
            omitted.append(_valid_text(name))

    total = 0
    try:
        for name in sorted(os.listdir(folder)):
            if not _plain_name(name) or _valid_text(name) != name:
                omit(name)
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
            except OSError:
                # A symbolic link (ELOOP), a socket, a file it may not read.
                omit(name)
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    omit(name + "/" if stat.S_ISDIR(info.st_mode) else name)
                    continue
                if len(files) >= _MAX_OUTPUT_FILES or total + info.st_size > _OUT_BYTES:
                    omit(name)
                    continue
                data = _read_regular(fd, info.st_size)
            finally:
                os.close(fd)
            total += len(data)
            files.append({"name": name, "content_base64": binascii.b2a_base64(data, newline=False).decode("ascii")})
    except OSError as exc:
        sys.stderr.write(f"pyexec: the output folder could not be read: {exc}\n")
    finally:
        os.close(folder)
    return files, omitted


