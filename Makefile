# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.signalmail-installed

.PHONY: install meltano-install postgres browser test test-fast demo lint format bench faults spark clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Meltano builds one venv per plugin under .meltano/ from the inline definitions in meltano.yml.
meltano-install: install
	$(BIN)/meltano install

# Starts Debian's PostgreSQL 15 if it is installed and stopped, and creates the test role.
postgres:
	scripts/start-postgres.sh

# Debian's Chromium, the real browser the report and email tests drive (Playwright cannot
# download its own here). Installed when missing and run as root; else those tests skip.
# The browser SDK test also needs RudderStack's JavaScript SDK, from the npm registry.
browser:
	scripts/install-chromium.sh
	cd tests/browser_sdk && npm ci --no-audit --no-fund --silent

# lint first (about half a minute): it fails before the servers and browsers are set up
test: install lint meltano-install postgres browser
	$(BIN)/pytest

# Unit tests only: offline, no servers.
test-fast: install
	$(BIN)/pytest tests/unit

demo: install
	$(BIN)/signalmail demo

# Every reliability test at its long size: the fault harness
# (tests/reliability/test_fault_harness.py) with 600 shoppers and 40 rounds of SIGKILLs inside
# each component of the watch, at random moments and of the collector, a full and a read-only
# spool (root: it mounts a tmpfs), under 20% Mandrill faults (about 6 minutes alone); twelve
# Hypothesis batches of hostile values; and the `soak` variants CI leaves out (each watch kill
# point on both engines). Figures go in docs/bench.md.
faults: install meltano-install postgres
	SIGNALMAIL_FAULT_SHOPPERS=600 SIGNALMAIL_FAULT_ROUNDS=40 SIGNALMAIL_HOSTILE_BATCHES=12 \
		$(BIN)/pytest -s -m "not spark" tests/reliability

# The dbt project on Apache Spark in local mode (docs/spark.md): the spark extra (dbt-spark,
# pyspark 3.5, the Iceberg runtime jar) into the same venv, Java 17 from Debian when `java` is
# missing (run as root), then the tests marked spark. Outside `make test`: 10-15 minutes on
# two cores; its figures go in docs/bench.md.
SPARK_STAMP := $(VENV)/.signalmail-spark-installed

$(SPARK_STAMP): $(STAMP)
	command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $(SPARK_STAMP)

spark: $(SPARK_STAMP)
	$(BIN)/pytest -m spark tests/spark

# The hooks of .pre-commit-config.yaml over every file: ruff, ruff format, mypy over tap/,
# target/ and plugins/ ([tool.mypy] in pyproject.toml), SQLFluff over the dbt project
# (dbt_project/.sqlfluff). `$(BIN)/pre-commit install` runs the same hooks on each commit.
lint: install
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .meltano/run output data/demo dbt_project/target dbt_project/logs
