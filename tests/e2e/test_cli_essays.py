"""``huleedu batch essays`` and ``huleedu batch essay`` against both servers as processes on real
backends (PostgreSQL for the batch store and the texts), with the demo workers: a finished run's
essays with their step results and texts, and an essay of ``huleedu batch spellcheck``."""

from __future__ import annotations

from generated.huleedu.batch.v1 import batch_pb2 as pb
from generated.huleedu.events.v1 import events_pb2 as ev
from tests.e2e.test_cli_run_control import Huleedu


async def test_the_essays_of_a_finished_run_are_read(sdk_mesh: dict[str, str]) -> None:
    huleedu = Huleedu(sdk_mesh)
    batch_id = (await huleedu("batch", "create", "-q", "Teh first essay.", "Second.")).strip()
    run_id = (await huleedu("batch", "start", "-q", batch_id, "spellcheck")).strip()
    await huleedu("batch", "watch", batch_id, "--run-id", run_id)

    listed = await huleedu.parsed(pb.ListEssaysResponse, "batch", "essays", batch_id, "--all")
    assert [e.client_ref for e in listed.essays] == ["essay-0", "essay-1"]
    for essay in listed.essays:
        [result] = essay.steps
        assert (result.step, result.outcome, result.run_id) == (
            "spellcheck",
            ev.STEP_OUTCOME_SUCCEEDED,
            run_id,
        )
        assert essay.original_text == ""  # BASIC by default
    first = listed.essays[0].essay_id
    essay = await huleedu.parsed(pb.EssayDetail, "batch", "essay", first, "--text")
    assert (essay.batch_id, essay.original_text) == (batch_id, "Teh first essay.")
    assert essay.current_text  # the demo workers store no new text: the original
    shown = await huleedu("batch", "essay", first, "--batch", batch_id, "--text")
    assert "Teh first essay." in shown

    queued = await huleedu.parsed(pb.TriggerSpellcheckResponse, "batch", "spellcheck", "Teh lone.")
    lone = await huleedu.parsed(pb.EssayDetail, "batch", "essay", queued.essay_id, "--text")
    assert (lone.batch_id, list(lone.steps), lone.original_text) == ("", [], "Teh lone.")
