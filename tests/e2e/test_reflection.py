"""grpcurl describes the contracts through server reflection, comments included."""

from __future__ import annotations

from tests.e2e.conftest import run_grpcurl


async def test_grpcurl_describes_methods_and_messages_with_their_comments(
    sdk_mesh: dict[str, str], grpcurl: str
) -> None:
    batch = sdk_mesh["HULEEDU_BATCH_ADDRESS"]
    method = run_grpcurl(grpcurl, batch, "describe", "huleedu.batch.v1.BatchService.CreateBatch")
    assert "huleedu.batch.v1.BatchService.CreateBatch is a method" in method
    assert "// Creates a batch with generated essay ids" in method
    assert "INVALID_ARGUMENT (BadRequest): no essays or more than 10,000" in method
    message = run_grpcurl(grpcurl, batch, "describe", "huleedu.batch.v1.CreateBatchRequest")
    assert "// The essays, 1 to 10,000, in order" in message
    assert "repeated .huleedu.batch.v1.EssayInput essays = 2;" in message
    service = run_grpcurl(grpcurl, batch, "describe", "huleedu.batch.v1.BatchService")
    assert "Errors: every failed call carries a google.rpc.Status" in service
    conductor = sdk_mesh["HULEEDU_CONDUCTOR_ADDRESS"]
    resolve = "huleedu.conductor.v1.PipelineConductorService.ResolvePipeline"
    described = run_grpcurl(grpcurl, conductor, "describe", resolve)
    assert "FAILED_PRECONDITION (reason PREREQUISITES_NOT_MET, PreconditionFailure)" in described
    listed = run_grpcurl(grpcurl, conductor, "list")
    assert "grpc.reflection.v1.ServerReflection" in listed
