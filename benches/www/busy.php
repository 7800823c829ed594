<?php
// a fixed amount of CPU work, about 2 ms (the "busy" workload: a CPU-bound script)
$x = '';
for ($i = 0; $i < 20000; $i++) { $x = md5($x); }
echo substr($x, 0, 8), "\n";
