<?php
// ~100-byte response (the "hello.php" workload)
echo str_repeat('x', 99), "\n";
