<?php
// Demo page for `make demo`: served by Apache -> mod_fastcgi-rs -> php-fpm.
header('Content-Type: text/plain; charset=utf-8');
$user = function_exists('posix_geteuid')
    ? (posix_getpwuid(posix_geteuid())['name'] ?? posix_geteuid())
    : (getenv('USER') ?: 'unknown');
$s = function ($k) { return $_SERVER[$k] ?? '(unset)'; };
echo "mod_fastcgi-rs demo: it works\n";
echo "PHP version:          ", phpversion(), "\n";
echo "SAPI:                 ", php_sapi_name(), "\n";
echo "php-fpm user:         ", $user, "\n";
echo "SCRIPT_NAME:          ", $s('SCRIPT_NAME'), "\n";
echo "SCRIPT_FILENAME:      ", $s('SCRIPT_FILENAME'), "\n";
echo "ORIG_SCRIPT_FILENAME: ", $s('ORIG_SCRIPT_FILENAME'), "\n";
echo "REQUEST_URI:          ", $s('REQUEST_URI'), "\n";
echo "GATEWAY_INTERFACE:    ", $s('GATEWAY_INTERFACE'), "\n";
echo "SERVER_SOFTWARE:      ", $s('SERVER_SOFTWARE'), "\n";
