"""deploy/docker/Dockerfile: hadolint finds nothing, and the image is what the deploy docs promise. It cannot be
built here (no container engine), so its structure is checked instead."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from tests.deploy.harness import DOCKERFILE, run_quiet

BUILD_TOOLS = ('build-essential', 'gcc', 'g++', 'make', 'python3-dev', 'libc6-dev')


def test_hadolint_finds_nothing(hadolint: str, tmp_path: Path) -> None:
    # run from an empty directory so that no stray .hadolint.yaml changes the rules
    done = run_quiet([hadolint, '--no-color', '--format', 'json', '--failure-threshold', 'style', str(DOCKERFILE)],
                     cwd=tmp_path)  # fmt: skip
    findings = json.loads(done.stdout or '[]')
    assert findings == [], '\n'.join(f'{f["line"]} {f["code"]} {f["level"]}: {f["message"]}' for f in findings)
    assert done.returncode == 0, done.stderr

    # and hadolint does look: the same file with a shell-form entrypoint is reported
    bad = tmp_path / 'Dockerfile'
    bad.write_text(DOCKERFILE.read_text().replace('ENTRYPOINT ["arq-supervise"]', 'ENTRYPOINT arq-supervise'))
    assert 'DL3025' in run_quiet([hadolint, '--no-color', str(bad)], cwd=tmp_path).stdout


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r'\\\n', ' ', '\n'.join(line for line in text.splitlines() if not line.lstrip().startswith('#')))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(' ')
            out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == 'FROM':
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_image_is_multi_stage_slim_non_root_and_exec_form() -> None:
    text = DOCKERFILE.read_text()
    args = dict(rest.split('=', 1) for kw, rest in instructions(text) if kw == 'ARG' and '=' in rest)
    builder, final = stages(text)[0], stages(text)[-1]
    assert len(stages(text)) >= 2

    base = final[0][1].split()[0]
    base = re.sub(r'\$\{(\w+)\}', lambda m: args[m.group(1)], base)
    assert re.fullmatch(r'python:3\.\d+-slim(-\w+)?', base), base

    assert any(kw == 'RUN' and 'pip wheel' in rest for kw, rest in builder)  # wheels are built in the builder
    assert any(kw == 'COPY' and rest.startswith('--from=') for kw, rest in final)  # and only results come over
    final_runs = ' '.join(rest for kw, rest in final if kw == 'RUN')
    assert not any(re.search(rf'(^|\s){re.escape(tool)}(\s|$)', final_runs) for tool in BUILD_TOOLS), final_runs
    assert 'apt-get install' not in final_runs and 'pip install' not in final_runs

    users = [rest for kw, rest in final if kw == 'USER']
    assert users and users[-1].split(':')[0] not in ('root', '0')

    [entrypoint] = [rest for kw, rest in final if kw == 'ENTRYPOINT']
    assert json.loads(entrypoint) == ['arq-supervise']  # exec form: the supervisor is PID 1 and gets SIGTERM
    stop = [rest for kw, rest in final if kw == 'STOPSIGNAL']
    assert stop in ([], ['SIGTERM'])

    [healthcheck] = [rest for kw, rest in final if kw == 'HEALTHCHECK']
    check = json.loads(healthcheck.split('CMD', 1)[1])
    assert check[:2] == ['arq-supervise', '--check'] and '--status-file' in check  # no Redis in the probe
    env = dict(word.split('=', 1) for kw, rest in final if kw == 'ENV' for word in shlex.split(rest) if '=' in word)
    status_file = env.get('ARQ_SUPERVISE_STATUS_FILE', '')
    assert check[check.index('--status-file') + 1] == status_file
    assert any(kw == 'RUN' and 'install -d -o arq -g arq' in rest and str(Path(status_file).parent) in rest
               for kw, rest in final)  # fmt: skip


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = (DOCKERFILE.parent / 'Dockerfile.dockerignore').read_text().split()
    for pattern in ('**/.git', '**/.venv', 'tests'):
        assert pattern in ignore
