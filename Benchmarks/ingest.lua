-- wrk script: POSTs realistic ~1 KiB CI callbacks, a new JobId per request, alternating XML and JSON.
-- setup/response/done and the BENCH_JSON summary line live in wrk-summary.lua, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk-summary.lua")
-- Counts answers by status so the driver can check durability (rows stored >= 2xx answered).

counter = 0


local xml_template = [[<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <EventName>TaskFinish</EventName>
    <JobsDetail>
        <Code>Success</Code>
        <CreationTime>2022-06-30T18:42:20+0800</CreationTime>
        <EndTime>2022-06-30T18:42:54+0800</EndTime>
        <Input>
            <BucketId>test-123456789</BucketId>
            <Object>output/digital.mp4</Object>
            <Region>ap-chongqing</Region>
        </Input>
        <JobId>%s</JobId>
        <Message>done</Message>
        <Operation>
            <ExtractDigitalWatermark>
                <Message>123456789ab</Message>
                <Type>Text</Type>
                <Version>V1</Version>
            </ExtractDigitalWatermark>
            <UserData>This is my ExtractDigitalWatermark job.</UserData>
            <JobLevel>0</JobLevel>
        </Operation>
        <QueueId>p2242ab62c7c94486915508540933a2c6</QueueId>
        <StartTime>2022-06-30T18:42:21+0800</StartTime>
        <State>Success</State>
        <Tag>ExtractDigitalWatermark</Tag>
    </JobsDetail>
</Response>
]]

local json_template = [[{
    "EventName": "TaskFinish",
    "JobsDetail": {
        "Code": "Success",
        "CreationTime": "2022-06-30T18:42:20+0800",
        "EndTime": "2022-06-30T18:42:54+0800",
        "Input": {
            "BucketId": "test-123456789",
            "Object": "output/digital.mp4",
            "Region": "ap-chongqing"
        },
        "JobId": "%s",
        "Message": "done",
        "Operation": {
            "ExtractDigitalWatermark": {
                "Message": "123456789ab",
                "Type": "Text",
                "Version": "V1"
            },
            "UserData": "This is my ExtractDigitalWatermark job.",
            "JobLevel": "0"
        },
        "QueueId": "p2242ab62c7c94486915508540933a2c6",
        "StartTime": "2022-06-30T18:42:21+0800",
        "State": "Success",
        "Tag": "ExtractDigitalWatermark"
    }
}
]]

local run_id = os.getenv("BENCH_RUN_ID") or tostring(os.time())

function request()
    counter = counter + 1
    -- j + 32 hex-ish characters, unique per run, thread and request.
    local job_id = string.format("j%08x%08x%016x", tonumber(run_id) % 0xffffffff, thread_id, counter)
    if counter % 2 == 0 then
        return wrk.format("POST", "/v1/callbacks", { ["Content-Type"] = "application/xml" }, string.format(xml_template, job_id))
    else
        return wrk.format("POST", "/v1/callbacks", { ["Content-Type"] = "application/json" }, string.format(json_template, job_id))
    end
end
