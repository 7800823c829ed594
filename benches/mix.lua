-- wrk script for the "mix" workload: 9 of 10 requests hello.php, 1 of 10 a script that waits
-- 50 ms (a mix of quick pages and slow ones waiting for a database)
local n = 0
request = function()
    n = n + 1
    if n % 10 == 0 then
        return wrk.format("GET", "/sleep.php?ms=50")
    end
    return wrk.format("GET", "/hello.php")
end
