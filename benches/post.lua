-- wrk script for the 256 KiB POST workload
wrk.method = "POST"
wrk.body = string.rep("a", 262144)
wrk.headers["Content-Type"] = "application/octet-stream"
