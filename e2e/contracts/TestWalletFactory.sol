// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestSmartWallet} from "./TestSmartWallet.sol";

/// @title TestWalletFactory
/// @notice A CREATE2 factory of TestSmartWallet for toolgate's end-to-end
/// tests of ERC-6492 (signatures of wallets that are not deployed yet). The
/// address of a wallet depends only on this factory's address, the owner and
/// the salt, so it is known, and can be paid, before deployment.
///
/// The factory keeps no storage, so its runtime code can be placed with
/// `anvil_setCode`. `deploy` is idempotent: deploying an existing wallet
/// returns its address without reverting, as ERC-6492 prefers (a verifier may
/// replay the factory call).
contract TestWalletFactory {
    /// @notice Emitted when `deploy` creates a wallet.
    event WalletDeployed(address indexed wallet, address indexed owner, bytes32 salt);

    /// @notice Deploys the wallet of (`owner`, `salt`) unless it exists, and
    /// returns its address.
    function deploy(address owner, bytes32 salt) external returns (address wallet) {
        wallet = walletAddress(owner, salt);
        if (wallet.code.length > 0) {
            return wallet;
        }
        TestSmartWallet created = new TestSmartWallet{salt: salt}(owner);
        require(address(created) == wallet, "TestWalletFactory: address mismatch");
        emit WalletDeployed(wallet, owner, salt);
    }

    /// @notice The CREATE2 address of the wallet of (`owner`, `salt`),
    /// deployed or not.
    function walletAddress(address owner, bytes32 salt) public view returns (address) {
        bytes32 initCodeHash = keccak256(abi.encodePacked(type(TestSmartWallet).creationCode, abi.encode(owner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initCodeHash)))));
    }
}
