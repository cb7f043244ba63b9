# The two set-up commands of the README. Both install what they need first.
.PHONY: run test setup lint bench screenshots

setup:
	./scripts/setup.sh

# The main job: build the self-test guest and open the cockpit on it
# (headless --batch run when there is no terminal).
run: setup
	.venv/bin/vexfs-cockpit image build
	@if [ -t 1 ]; then .venv/bin/vexfs-cockpit run --config configs/default.yaml; \
	else .venv/bin/vexfs-cockpit run --batch --config configs/default.yaml --env ci; fi

# The test suite, real guests included, plus the layering contract.
test: setup
	.venv/bin/lint-imports
	.venv/bin/pytest -q --durations=15

bench: setup
	for b in bench/*.py; do .venv/bin/python $$b || exit 1; done

# The README's pictures (docs/img/*.svg), taken by Textual from real runs on the
# self-test guest into a temporary history DB; a few minutes.
screenshots: setup
	.venv/bin/vexfs-cockpit image build
	.venv/bin/python scripts/screenshots.py
