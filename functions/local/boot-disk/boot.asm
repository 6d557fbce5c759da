; bootfarm test vDisk: boot sector (512 bytes, 16-bit real mode, loaded at 0x7c00).
;
; Proves that a disk really streamed. On COM1 (UART set to 115200 8N1) it prints
;   BOOTFARM-DISK start
;   BOOTFARM-DISK message: <text>
;   BOOTFARM-DISK OK sum=<8 lower-case hex digits> sectors=<decimal>
; each line starting with CR LF. It reads LBA 1, the parameter sector:
;   offset  0: range table, up to 6 x (lba: dd, chunks of 64 sectors: db), ended
;              by an entry of 0 chunks
;   offset 64: the message, NUL-terminated
; then every range, in table order, through int 13h AH=42h (extended read with
; a DAP) from the boot drive in DL, 64 sectors per call, and prints CRC-32
; (IEEE 802.3, as zlib's crc32) over all those bytes. A failed read prints
;   BOOTFARM-DISK READ-ERROR ah=<2 hex digits> lba=<decimal>
; Then it ends QEMU through isa-debug-exit (port 0xf4; QEMU exits with 2v+1):
; v=0 (exit 1) success, v=2 (exit 5) read error. Without that device it halts.
;
; The sector itself has no parameters (../boot-disk.ts writes them to LBA 1) and
; an empty partition table: iPXE's int13 guesses the disk geometry from it.
; Build: nasm -f bin -o boot.bin boot.asm   (the checked-in boot.bin must match)

bits 16
cpu 386
org 0x7c00

COM1      equ 0x3f8
EXIT_PORT equ 0xf4
BUF       equ 0x8000          ; read buffer 0000:8000-ffff, clear of us, our variables and the stack
PARAMS    equ 0x0600          ; LBA 1, the parameter sector, is read to 0000:0600
TABLE     equ PARAMS          ; its range table
MESSAGE   equ PARAMS + 64     ; its message
CHUNK     equ 64              ; sectors per int 13h call: 32 KiB, within one segment
CRC_POLY  equ 0xedb88320      ; reflected IEEE polynomial

; Variables live in RAM just past the sector, addressed from bp.
VARS      equ 0x7e00
drive     equ 0x00            ; byte
crc       equ 0x04            ; dword
total     equ 0x08            ; dword, sectors read
dap       equ 0x10            ; disk address packet (16 bytes)
dap_count equ dap + 2
dap_off   equ dap + 4
dap_lba   equ dap + 8         ; qword, high half stays 0
VARS_SIZE equ 0x20

start:
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax                 ; interrupts stay off until after the next instruction
    mov sp, 0x7c00
    cld                        ; only relative jumps: CS may be 0 or 0x7c0
    mov bp, VARS
    mov di, bp
    mov cx, VARS_SIZE / 2
    rep stosw                  ; ax = 0
    mov [bp + drive], dl
    mov byte [bp + dap], 0x10
    mov byte [bp + dap_off + 1], PARAMS >> 8
    dec dword [bp + crc]       ; CRC-32 starts at 0xffffffff

    ; UART 16550 at 115200 8N1: (register, value) pairs.
    mov si, uart_init
    mov cl, 4
.uart:
    lodsw
    mov dx, COM1
    add dl, al
    mov al, ah
    out dx, al
    loop .uart

    mov si, s_start
    call say

    ; The parameter sector: range table and message.
    inc byte [bp + dap_lba]    ; LBA 1
    inc byte [bp + dap_count]
    call read
    mov si, s_message
    call say
    mov byte [PARAMS + 0x1ff], 0 ; never print past the sector
    mov si, MESSAGE
    call puts

    ; Every range, CHUNK sectors at a time, folded into the CRC.
    mov byte [bp + dap_count], CHUNK
    mov byte [bp + dap_off + 1], BUF >> 8
    mov si, TABLE
    xor cx, cx
.range:
    lodsd
    mov [bp + dap_lba], eax
    lodsb
    mov cl, al                 ; chunks in this range; 0 ends the table
    jcxz .done
.chunk:
    call read
    push cx
    mov cx, CHUNK * 512
    mov di, BUF
    mov edx, [bp + crc]
.byte:
    xor dl, [di]
    mov al, 8
.bit:
    shr edx, 1
    jnc .nopoly
    xor edx, CRC_POLY
.nopoly:
    dec al
    jnz .bit
    inc di
    loop .byte
    mov [bp + crc], edx
    pop cx
    add dword [bp + dap_lba], CHUNK
    add dword [bp + total], CHUNK
    loop .chunk
    jmp .range
.done:

    mov si, s_ok
    call say
    mov eax, [bp + crc]
    not eax
    mov cl, 8
    call puthex
    mov si, s_sectors
    call puts
    mov eax, [bp + total]
    call putdec
    xor al, al
    jmp exit

; Reads [dap_count] sectors at [dap_lba] into BUF, keeping all registers;
; a failure is reported and ends the run.
read:
    pusha
    mov ah, 0x42
    lea si, [bp + dap]
    call int13
    jc .fail
    popa
    ret
.fail:
    shl eax, 16                ; ah, the status, into the top byte
    push eax
    mov si, s_error
    call say
    pop eax
    mov cx, 2
    call puthex
    mov si, s_lba
    call puts
    mov eax, [bp + dap_lba]
    call putdec
    mov al, 2
; Ends the last line; al = status for isa-debug-exit (QEMU exits with 2*al+1).
exit:
    push ax
    mov si, s_crlf
    call puts
    pop ax
    out EXIT_PORT, al
.halt:
    cli
    hlt
    jmp .halt

int13:
    mov dl, [bp + drive]
    int 0x13
.ret:
    ret

; Prints the tag, then the NUL-terminated string at ds:si.
say:
    push si
    mov si, s_tag
    call puts
    pop si
puts:
    lodsb
    test al, al
    jz int13.ret
    call putc
    jmp puts

; Prints the top cx nibbles of eax in lower-case hex.
puthex:
    rol eax, 4
    push eax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe .digit
    add al, 'a' - '9' - 1
.digit:
    call putc
    pop eax
    loop puthex
    ret

; Prints eax in decimal.
putdec:
    xor cx, cx
    o32 push byte 10
    pop ebx
.div:
    xor edx, edx
    div ebx
    push dx
    inc cx
    test eax, eax
    jnz .div
.out:
    pop ax
    add al, '0'
    call putc
    loop .out
    ret

putc:
    push dx
    push ax
    mov dx, COM1 + 5           ; line status: wait for an empty transmitter
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

uart_init:  db 3, 0x80, 0, 0x01, 1, 0x00, 3, 0x03   ; DLAB, divisor 1, 8N1 (IER stays 0 from reset)
s_tag:      db 13, 10, 'BOOTFARM-DISK ', 0   ; lines start with CR LF
s_start:    db 'start', 0
s_message:  db 'message: ', 0
s_ok:       db 'OK sum=', 0
s_sectors:  db ' sectors=', 0
s_error:    db 'READ-ERROR ah=', 0
s_lba:      db ' lba=', 0
s_crlf:     db 13, 10, 0

    times 0x1be - ($ - $$) db 0   ; nasm stops here if the code outgrew its room
    times 4 * 16 db 0             ; an empty partition table (iPXE guesses the geometry from it)
    dw 0xaa55
