<?php
// reads the whole request body (the "256 KiB POST" workload) and answers its length
$n = strlen(file_get_contents('php://input'));
echo "received $n bytes\n";
