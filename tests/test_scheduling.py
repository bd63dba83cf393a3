"""scripts/test's workers: a module's tests never split, and the npm users share one worker."""

from __future__ import annotations

from tests.scheduling import scope


def test_every_test_of_a_module_and_its_parameters_share_one_scope() -> None:
    ids = [
        "tests/e2e/test_chat.py::test_health_reports_the_loaded_model_and_an_empty_queue",
        "tests/e2e/test_chat.py::test_bad_input_gets_an_openai_shaped_4xx_naming_the_param[n::2]",
        "tests/e2e/test_chat.py::SomeClass::test_method",
    ]
    assert {scope(i) for i in ids} == {"tests/e2e/test_chat.py"}


def test_two_modules_get_two_scopes() -> None:
    assert scope("tests/e2e/test_queue.py::test_a") != scope("tests/e2e/test_models.py::test_a")


def test_the_pages_that_run_javascript_from_tests_cache_node_share_one_scope() -> None:
    node = {
        scope(f"tests/e2e/{m}::test_every_marked_example_runs[x]")
        for m in ("test_docs.py", "test_docs_agents.py", "test_docs_anthropic.py")
    }
    assert node == {"node"}
    assert scope("tests/e2e/test_docs_responses.py::test_a") == "tests/e2e/test_docs_responses.py"
