"""SDK contract test: Tencent's official Python SDK (cos-python-sdk-v5, module qcloud_cos) drives ci-simulator.

Run by scripts/sdk-contract-test, which creates the venv, starts the simulator and sets:
  SDK_CONTRACT_HOST    host:port of the simulator (loopback)
  SDK_CONTRACT_ID      the simulator's SecretId
  SDK_CONTRACT_KEY     the simulator's SecretKey
  SDK_CONTRACT_BUCKET  the simulator's BucketName-APPID
  SDK_CONTRACT_REGION  the simulator's region
  SDK_CONTRACT_QUEUE   the simulator's default QueueId

Each check prints `ok` or `FAIL` with its name; the last line is `sdk-contract: N passed, M failed`, and the
exit status is non-zero on any failure. This is the one client in the project that nobody here wrote: what
it sends and how it reads the answers is CI's own contract.
"""

import logging
import os
import re
import sys
import time
import traceback

from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError

HOST = os.environ["SDK_CONTRACT_HOST"]
SECRET_ID = os.environ["SDK_CONTRACT_ID"]
SECRET_KEY = os.environ["SDK_CONTRACT_KEY"]
BUCKET = os.environ["SDK_CONTRACT_BUCKET"]
REGION = os.environ["SDK_CONTRACT_REGION"]
QUEUE = os.environ["SDK_CONTRACT_QUEUE"]
TAG = "ExtractDigitalWatermark"
JOB_ID = re.compile(r"^j[0-9a-f]{32}$")
# Generous: the machine may be loaded; jobs finish ~150 ms after submission.
DEADLINE_SECONDS = 30

# The SDK logs every error answer at ERROR level; the checks below report what matters.
logging.getLogger("qcloud_cos").setLevel(logging.DEBUG if os.environ.get("SDK_CONTRACT_DEBUG") else logging.CRITICAL)


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def client(secret_id=SECRET_ID, secret_key=SECRET_KEY, ip_port=False):
    """A client as a user would configure one for a custom domain (or, with ip_port, for a fixed IP)."""
    if ip_port:
        host, port = HOST.rsplit(":", 1)
        # The SDK then sends `Host: <bucket>.cos.<region>.myqcloud.com` and signs that.
        config = CosConfig(Region=REGION, SecretId=secret_id, SecretKey=secret_key, Scheme="http", IP=host, Port=int(port), Timeout=30)
    else:
        # The SDK then sends `Host: 127.0.0.1:<port>` but signs `host` as `127.0.0.1`.
        config = CosConfig(Region=REGION, SecretId=secret_id, SecretKey=secret_key, Scheme="http", Domain=HOST, Timeout=30)
    return CosS3Client(config, retry=1)


def submit(sdk, obj, user_data=None, job_level=None):
    operation = {"ExtractDigitalWatermark": {"Type": "Text", "Version": "V1"}}
    if user_data is not None:
        operation["UserData"] = user_data
    if job_level is not None:
        operation["JobLevel"] = str(job_level)
    body = {"Tag": TAG, "Input": {"Object": obj}, "Operation": operation}
    answer = sdk.ci_create_media_jobs(Bucket=BUCKET, Jobs=body, Lst={}, ContentType="application/xml")
    created.append(answer["JobsDetail"][0]["JobId"])
    return answer


def describe(sdk, job_ids):
    return sdk.ci_get_media_jobs(Bucket=BUCKET, JobIDs=",".join(job_ids), ContentType="application/xml")


def wait_final(sdk, job_id):
    """The JobsDetail once the job is Success or Failed; fails the check at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        detail = describe(sdk, [job_id])["JobsDetail"][0]
        if detail["State"] in ("Success", "Failed"):
            return detail
        expect(time.monotonic() < deadline, f"{job_id} still {detail['State']} after {DEADLINE_SECONDS} s")
        time.sleep(0.05)


def ci_time(seconds):
    """CI's time format, in CI's +08:00."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + 8 * 3600)) + "+0800"


def service_error(call):
    """The CosServiceError `call` raises; fails the check when it succeeds."""
    try:
        call()
    except CosServiceError as error:
        return error
    raise CheckFailed("the call succeeded")


def expect_ci_error(error, status, code, resource_suffix):
    """CI's error document, read the SDK's way: every field present, none `Unknown`."""
    summary = (
        f"status {error.get_status_code()}, code {error.get_error_code()}, message {error.get_error_msg()!r}, "
        f"resource {error.get_resource_location()!r}, request id {error.get_request_id()!r}, trace id {error.get_trace_id()!r}"
    )
    expect(isinstance(error.get_digest_msg(), dict), f"the SDK could not read the error body: {error.get_origin_msg()!r}")
    expect(error.get_status_code() == status and error.get_error_code() == code, f"expected {status} {code}: {summary}")
    for value in (error.get_error_msg(), error.get_resource_location(), error.get_request_id(), error.get_trace_id()):
        expect(value and value != "Unknown", f"a field is missing: {summary}")
    expect(error.get_resource_location().endswith(resource_suffix), f"resource should end with {resource_suffix}: {summary}")


# MARK: Checks. They run in order; later ones use jobs that earlier ones created.

state = {}
# Every JobId the simulator handed out, in order.
created = []
started = time.time()


def submit_ExtractDigitalWatermark_AnswersSubmittedJobsDetail():
    answer = submit(client(), "input/demo.mp4", user_data="sdk-contract <1>", job_level=1)
    jobs = answer.get("JobsDetail") or []
    expect(len(jobs) == 1, f"one JobsDetail expected: {answer}")
    job = jobs[0]
    expect(JOB_ID.match(job.get("JobId") or ""), f"JobId is not j + 32 hex: {job.get('JobId')!r}")
    expect(job["State"] == "Submitted" and job["Tag"] == TAG, f"state/tag: {job}")
    expect(job["Input"] == {"BucketId": BUCKET, "Object": "input/demo.mp4", "Region": REGION}, f"Input: {job['Input']}")
    expect(job["Operation"].get("UserData") == "sdk-contract <1>", f"UserData not echoed: {job['Operation']}")
    expect(job["Operation"].get("JobLevel") == "1", f"JobLevel: {job['Operation']}")
    expect(job["QueueId"] == QUEUE, f"QueueId: {job['QueueId']}")
    expect(job["StartTime"] == "-" and job["EndTime"] == "-", f"times are '-' until set: {job}")
    state["job"] = job["JobId"]


def describe_SubmittedJob_ReachesSuccessWithWatermarkText():
    expect("job" in state, "no job was submitted")
    job = wait_final(client(), state["job"])
    expect(job["State"] == "Success" and job["Code"] == "Success", f"final state: {job}")
    expect(job["Operation"]["ExtractDigitalWatermark"].get("Message") == "wm-demo.mp4", f"watermark: {job['Operation']}")
    expect(job["EndTime"] not in (None, "-"), f"EndTime: {job['EndTime']}")


def describe_MissingObject_ReachesFailedWithCode():
    sdk = client()
    job_id = submit(sdk, "input/missing.mp4")["JobsDetail"][0]["JobId"]
    job = wait_final(sdk, job_id)
    expect(job["State"] == "Failed" and job["Code"] == "ResourceNotFound", f"final state: {job}")
    state["failed"] = job_id


def describe_SeveralIds_ReportsUnknownOnesInNonExistJobIds():
    expect("job" in state and "failed" in state, "no jobs were submitted")
    unknown = "j" + "0" * 32
    answer = describe(client(), [state["job"], unknown, state["failed"]])
    found = [job["JobId"] for job in answer.get("JobsDetail") or []]
    expect(found == [state["job"], state["failed"]], f"JobsDetail: {found}")
    expect(answer.get("NonExistJobIds") == unknown, f"NonExistJobIds: {answer.get('NonExistJobIds')!r}")


def list_StatesAndCreationTime_PageWithNextTokenInOrder():
    sdk = client()
    since = ci_time(started - 60)
    submitted = [submit(sdk, f"input/list-{index}.mp4")["JobsDetail"][0]["JobId"] for index in range(5)]
    for job_id in submitted:
        wait_final(sdk, job_id)
    listed, token, pages = [], "", 0
    while True:
        page = sdk.ci_list_media_jobs(
            Bucket=BUCKET, Tag=TAG, QueueId=QUEUE, States="Success", StartCreationTime=since, OrderByTime="Asc", Size=2,
            NextToken=token, ContentType="application/xml")
        jobs = page.get("JobsDetail") or []
        expect(len(jobs) <= 2, f"page of {len(jobs)} jobs for Size=2")
        expect(all(job["State"] == "Success" for job in jobs), f"states: {[job['State'] for job in jobs]}")
        listed += [job["JobId"] for job in jobs]
        pages += 1
        token = page.get("NextToken") or ""
        if not token:
            break
        expect(pages < 20, "NextToken never ends")
    expected = [state["job"]] + submitted if "job" in state else submitted
    expect(listed == expected, f"listed {listed}, expected {expected} (oldest first, Success only)")


def list_Defaults_ListNewestFirst():
    expect(created, "no jobs were submitted")
    page = client().ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, ContentType="application/xml")
    jobs = [job["JobId"] for job in page.get("JobsDetail") or []]
    expect(jobs == list(reversed(created))[:10], f"newest first, 10 per page by default: {jobs}, created {created}")


def list_SdkInIPModeWithBucketHost_IsAccepted():
    page = client(ip_port=True).ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, Size=1, ContentType="application/xml")
    expect(len(page.get("JobsDetail") or []) == 1, f"answer: {page}")


def error_WrongSecretKey_IsSignatureDoesNotMatchForEveryOperation():
    sdk = client(secret_key="not-the-secret-key")
    before = len(client().ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, Size=100, ContentType="application/xml").get("JobsDetail") or [])
    expect_ci_error(service_error(lambda: submit(sdk, "input/denied.mp4")), 403, "SignatureDoesNotMatch", "/jobs")
    expect_ci_error(service_error(lambda: describe(sdk, ["j" + "0" * 32])), 403, "SignatureDoesNotMatch", "/jobs/j" + "0" * 32)
    expect_ci_error(
        service_error(lambda: sdk.ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, ContentType="application/xml")), 403, "SignatureDoesNotMatch",
        "/jobs")
    after = len(client().ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, Size=100, ContentType="application/xml").get("JobsDetail") or [])
    expect(after == before, f"a refused submit created a job ({before} → {after})")


def error_UnknownSecretId_IsInvalidAccessKeyId():
    sdk = client(secret_id="AKIDnobody")
    expect_ci_error(service_error(lambda: describe(sdk, ["j" + "0" * 32])), 403, "InvalidAccessKeyId", "/jobs/j" + "0" * 32)


def error_InvalidArguments_AreInvalidArgumentWithReason():
    sdk = client()
    error = service_error(lambda: sdk.ci_list_media_jobs(Bucket=BUCKET, Tag=TAG, Size=101, ContentType="application/xml"))
    expect_ci_error(error, 400, "InvalidArgument", "/jobs")
    expect("size" in error.get_error_msg(), f"message names the parameter: {error.get_error_msg()!r}")
    body = {"Tag": TAG, "Input": {"Object": "input/demo.mp4"}}
    error = service_error(lambda: sdk.ci_create_media_jobs(Bucket=BUCKET, Jobs=body, Lst={}, ContentType="application/xml"))
    expect_ci_error(error, 400, "InvalidArgument", "/jobs")
    expect("ExtractDigitalWatermark" in error.get_error_msg(), f"message names the field: {error.get_error_msg()!r}")


CHECKS = [
    submit_ExtractDigitalWatermark_AnswersSubmittedJobsDetail,
    describe_SubmittedJob_ReachesSuccessWithWatermarkText,
    describe_MissingObject_ReachesFailedWithCode,
    describe_SeveralIds_ReportsUnknownOnesInNonExistJobIds,
    list_StatesAndCreationTime_PageWithNextTokenInOrder,
    list_Defaults_ListNewestFirst,
    list_SdkInIPModeWithBucketHost_IsAccepted,
    error_WrongSecretKey_IsSignatureDoesNotMatchForEveryOperation,
    error_UnknownSecretId_IsInvalidAccessKeyId,
    error_InvalidArguments_AreInvalidArgumentWithReason,
]


def main():
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
        except CheckFailed as problem:
            failed += 1
            print(f"FAIL {check.__name__}: {problem}", flush=True)
        except Exception:  # An SDK exception is a failed check, reported with its trace.
            failed += 1
            print(f"FAIL {check.__name__}: {traceback.format_exc(limit=3).strip()}", flush=True)
        else:
            passed += 1
            print(f"ok   {check.__name__}", flush=True)
    print(f"sdk-contract: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
